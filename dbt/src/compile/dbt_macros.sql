{#- The `dbt` namespace: dbt's built-in cross-database macros, written for Rainbow, with the
    meaning dbt-bigquery gives each (Rainbow's warehouses speak BigQuery SQL). Every macro
    dispatches through `adapter.dispatch(name, 'dbt')`, so a project can override it
    (`dispatch: [{macro_namespace: dbt, search_order: [my_project, dbt]}]`); `default__<name>`
    holds the BigQuery body. Sources: docs.getdbt.com/reference/dbt-jinja-functions/cross-database-macros
    and the BigQuery function reference. -#}

{%- macro type_string() -%}{{ return(adapter.dispatch('type_string', 'dbt')()) }}{%- endmacro -%}
{%- macro default__type_string() -%}{{ return('string') }}{%- endmacro -%}
{%- macro type_timestamp() -%}{{ return(adapter.dispatch('type_timestamp', 'dbt')()) }}{%- endmacro -%}
{%- macro default__type_timestamp() -%}{{ return('timestamp') }}{%- endmacro -%}
{%- macro type_float() -%}{{ return(adapter.dispatch('type_float', 'dbt')()) }}{%- endmacro -%}
{%- macro default__type_float() -%}{{ return('float64') }}{%- endmacro -%}
{%- macro type_numeric() -%}{{ return(adapter.dispatch('type_numeric', 'dbt')()) }}{%- endmacro -%}
{%- macro default__type_numeric() -%}{{ return('numeric') }}{%- endmacro -%}
{%- macro type_bigint() -%}{{ return(adapter.dispatch('type_bigint', 'dbt')()) }}{%- endmacro -%}
{%- macro default__type_bigint() -%}{{ return('int64') }}{%- endmacro -%}
{%- macro type_int() -%}{{ return(adapter.dispatch('type_int', 'dbt')()) }}{%- endmacro -%}
{%- macro default__type_int() -%}{{ return('int64') }}{%- endmacro -%}
{%- macro type_boolean() -%}{{ return(adapter.dispatch('type_boolean', 'dbt')()) }}{%- endmacro -%}
{%- macro default__type_boolean() -%}{{ return('bool') }}{%- endmacro -%}

{%- macro cast(field, type) -%}{{ return(adapter.dispatch('cast', 'dbt')(field, type)) }}{%- endmacro -%}
{%- macro default__cast(field, type) -%}cast({{ field }} as {{ type }}){%- endmacro -%}
{%- macro safe_cast(field, type) -%}{{ return(adapter.dispatch('safe_cast', 'dbt')(field, type)) }}{%- endmacro -%}
{%- macro default__safe_cast(field, type) -%}safe_cast({{ field }} as {{ type }}){%- endmacro -%}
{%- macro cast_bool_to_text(field) -%}{{ return(adapter.dispatch('cast_bool_to_text', 'dbt')(field)) }}{%- endmacro -%}
{%- macro default__cast_bool_to_text(field) -%}cast({{ field }} as string){%- endmacro -%}

{%- macro current_timestamp() -%}{{ return(adapter.dispatch('current_timestamp', 'dbt')()) }}{%- endmacro -%}
{%- macro default__current_timestamp() -%}current_timestamp(){%- endmacro -%}
{%- macro current_timestamp_backcompat() -%}current_timestamp(){%- endmacro -%}
{%- macro current_timestamp_in_utc_backcompat() -%}current_timestamp(){%- endmacro -%}
{%- macro snapshot_get_time() -%}current_timestamp(){%- endmacro -%}

{%- macro date_trunc(datepart, date) -%}{{ return(adapter.dispatch('date_trunc', 'dbt')(datepart, date)) }}{%- endmacro -%}
{%- macro default__date_trunc(datepart, date) -%}timestamp_trunc(cast({{ date }} as timestamp), {{ datepart }}){%- endmacro -%}
{%- macro dateadd(datepart, interval, from_date_or_timestamp) -%}{{ return(adapter.dispatch('dateadd', 'dbt')(datepart, interval, from_date_or_timestamp)) }}{%- endmacro -%}
{%- macro default__dateadd(datepart, interval, from_date_or_timestamp) -%}datetime_add(cast({{ from_date_or_timestamp }} as datetime), interval {{ interval }} {{ datepart }}){%- endmacro -%}
{%- macro datediff(first_date, second_date, datepart) -%}{{ return(adapter.dispatch('datediff', 'dbt')(first_date, second_date, datepart)) }}{%- endmacro -%}
{%- macro default__datediff(first_date, second_date, datepart) -%}datetime_diff(cast({{ second_date }} as datetime), cast({{ first_date }} as datetime), {{ datepart }}){%- endmacro -%}
{%- macro last_day(date, datepart) -%}{{ return(adapter.dispatch('last_day', 'dbt')(date, datepart)) }}{%- endmacro -%}
{%- macro default__last_day(date, datepart) -%}cast({{ dbt.dateadd('day', '-1', dbt.dateadd(datepart, '1', dbt.date_trunc(datepart, date))) }} as date){%- endmacro -%}
{%- macro date(year, month, day) -%}{{ return(adapter.dispatch('date', 'dbt')(year, month, day)) }}{%- endmacro -%}
{%- macro default__date(year, month, day) -%}date({{ year }}, {{ month }}, {{ day }}){%- endmacro -%}

{%- macro concat(fields) -%}{{ return(adapter.dispatch('concat', 'dbt')(fields)) }}{%- endmacro -%}
{%- macro default__concat(fields) -%}concat({{ fields | join(', ') }}){%- endmacro -%}
{%- macro hash(field) -%}{{ return(adapter.dispatch('hash', 'dbt')(field)) }}{%- endmacro -%}
{%- macro default__hash(field) -%}to_hex(md5(cast({{ field }} as string))){%- endmacro -%}
{%- macro length(expression) -%}{{ return(adapter.dispatch('length', 'dbt')(expression)) }}{%- endmacro -%}
{%- macro default__length(expression) -%}length({{ expression }}){%- endmacro -%}
{%- macro position(substring_text, string_text) -%}{{ return(adapter.dispatch('position', 'dbt')(substring_text, string_text)) }}{%- endmacro -%}
{%- macro default__position(substring_text, string_text) -%}strpos({{ string_text }}, {{ substring_text }}){%- endmacro -%}
{%- macro replace(field, old_chars, new_chars) -%}{{ return(adapter.dispatch('replace', 'dbt')(field, old_chars, new_chars)) }}{%- endmacro -%}
{%- macro default__replace(field, old_chars, new_chars) -%}replace({{ field }}, {{ old_chars }}, {{ new_chars }}){%- endmacro -%}
{%- macro right(string_text, length_expression) -%}{{ return(adapter.dispatch('right', 'dbt')(string_text, length_expression)) }}{%- endmacro -%}
{%- macro default__right(string_text, length_expression) -%}case when {{ length_expression }} = 0 then '' else substr({{ string_text }}, -1 * ({{ length_expression }})) end{%- endmacro -%}
{%- macro split_part(string_text, delimiter_text, part_number) -%}{{ return(adapter.dispatch('split_part', 'dbt')(string_text, delimiter_text, part_number)) }}{%- endmacro -%}
{%- macro default__split_part(string_text, delimiter_text, part_number) -%}
  {%- if part_number >= 0 -%}
split({{ string_text }}, {{ delimiter_text }})[safe_offset({{ part_number - 1 }})]
  {%- else -%}
split({{ string_text }}, {{ delimiter_text }})[safe_offset(array_length(split({{ string_text }}, {{ delimiter_text }})) + {{ part_number }})]
  {%- endif -%}
{%- endmacro -%}
{%- macro escape_single_quotes(expression) -%}{{ return(adapter.dispatch('escape_single_quotes', 'dbt')(expression)) }}{%- endmacro -%}
{%- macro default__escape_single_quotes(expression) -%}{{ expression | replace("\\", "\\\\") | replace("'", "\\'") }}{%- endmacro -%}
{%- macro string_literal(value) -%}{{ return(adapter.dispatch('string_literal', 'dbt')(value)) }}{%- endmacro -%}
{%- macro default__string_literal(value) -%}'{{ dbt.escape_single_quotes(value) }}'{%- endmacro -%}

{%- macro listagg(measure, delimiter_text="','", order_by_clause=none, limit_num=none) -%}{{ return(adapter.dispatch('listagg', 'dbt')(measure, delimiter_text, order_by_clause, limit_num)) }}{%- endmacro -%}
{%- macro default__listagg(measure, delimiter_text, order_by_clause, limit_num) -%}string_agg({{ measure }}, {{ delimiter_text }}{% if order_by_clause %} {{ order_by_clause }}{% endif %}{% if limit_num %} limit {{ limit_num }}{% endif %}){%- endmacro -%}
{%- macro any_value(expression) -%}{{ return(adapter.dispatch('any_value', 'dbt')(expression)) }}{%- endmacro -%}
{%- macro default__any_value(expression) -%}any_value({{ expression }}){%- endmacro -%}
{%- macro bool_or(expression) -%}{{ return(adapter.dispatch('bool_or', 'dbt')(expression)) }}{%- endmacro -%}
{%- macro default__bool_or(expression) -%}logical_or({{ expression }}){%- endmacro -%}

{%- macro except() -%}{{ return(adapter.dispatch('except', 'dbt')()) }}{%- endmacro -%}
{%- macro default__except() -%}except distinct{%- endmacro -%}
{%- macro intersect() -%}{{ return(adapter.dispatch('intersect', 'dbt')()) }}{%- endmacro -%}
{%- macro default__intersect() -%}intersect distinct{%- endmacro -%}

{%- macro array_construct(inputs=[], data_type=api.Column.translate_type('integer')) -%}{{ return(adapter.dispatch('array_construct', 'dbt')(inputs, data_type)) }}{%- endmacro -%}
{%- macro default__array_construct(inputs, data_type) -%}{% if inputs | length > 0 %}[{{ inputs | join(', ') }}]{% else %}array<{{ data_type }}>[]{% endif %}{%- endmacro -%}
{%- macro array_concat(array_1, array_2) -%}{{ return(adapter.dispatch('array_concat', 'dbt')(array_1, array_2)) }}{%- endmacro -%}
{%- macro default__array_concat(array_1, array_2) -%}array_concat({{ array_1 }}, {{ array_2 }}){%- endmacro -%}
{%- macro array_append(array, new_element) -%}{{ return(adapter.dispatch('array_append', 'dbt')(array, new_element)) }}{%- endmacro -%}
{%- macro default__array_append(array, new_element) -%}{{ dbt.array_concat(array, dbt.array_construct([new_element])) }}{%- endmacro -%}

{%- macro get_powers_of_two(upper_bound) -%}
  {%- if upper_bound <= 0 -%}{{ exceptions.raise_compiler_error("upper bound must be positive") }}{%- endif -%}
  {%- for _ in range(1, 100) -%}{%- if upper_bound <= 2 ** loop.index -%}{{ return(loop.index) }}{%- endif -%}{%- endfor -%}
{%- endmacro -%}
{%- macro generate_series(upper_bound) -%}
  {%- set n = dbt.get_powers_of_two(upper_bound) -%}
with p as (select 0 as generated_number union all select 1),
unioned as (
  select
  {% for i in range(n) -%}
  p{{ i }}.generated_number * power(2, {{ i }}){% if not loop.last %} + {% endif %}
  {%- endfor %} + 1 as generated_number
  from
  {% for i in range(n) -%}
  p as p{{ i }}{% if not loop.last %} cross join {% endif %}
  {%- endfor %}
)
select * from unioned where generated_number <= {{ upper_bound }} order by generated_number
{%- endmacro -%}

{%- macro should_store_failures() -%}{{ return(config.get('store_failures') or false) }}{%- endmacro -%}
{%- macro get_where_subquery(relation) -%}
  {%- set where = config.get('where') -%}
  {%- if where -%}{{ return('(select * from ' ~ relation ~ ' where ' ~ where ~ ') dbt_subquery') }}{%- else -%}{{ return(relation) }}{%- endif -%}
{%- endmacro -%}
{%- macro load_relation(relation) -%}{{ return(adapter.load_relation(relation)) }}{%- endmacro -%}
{%- macro should_full_refresh() -%}
  {%- set configured = config.get('full_refresh') -%}
  {{ return(flags.FULL_REFRESH if configured is none else configured) }}
{%- endmacro -%}
