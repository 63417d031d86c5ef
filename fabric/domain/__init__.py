"""Domain values computed by the core: the desired state and its resources."""
