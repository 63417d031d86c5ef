-- a singular test: no customer has paid a negative total
select * from {{ ref('customer_totals') }} where paid < 0
