select 1 as leaked
