-- a depends on b
select * from {{ ref('b') }}
