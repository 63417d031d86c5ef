{% macro clean_status(column) -%}
    lower(trim({{ column }}))
{%- endmacro %}
