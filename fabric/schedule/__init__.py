"""Schedules that fire by themselves: fire times with a written DST policy, the tick decision
(pure), and the scheduler loop that claims due schedules and hands their runs to a dispatch."""
