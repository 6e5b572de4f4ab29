-- A view over the staging views over current: as fresh as the last applied CDC batch,
-- with no rebuild between a deal closing and the rep seeing it.
{{ config(materialized='view') }}

with

opportunities as (

    select * from {{ ref('stg_salesforce__opportunity') }}

),

accounts as (

    select * from {{ ref('stg_salesforce__account') }}

),

users as (

    select * from {{ ref('stg_salesforce__user') }}

),

closed_won as (

    select * from opportunities
    where is_won

),

final as (

    select
        closed_won.opportunity_id,
        closed_won.opportunity_name,
        closed_won.amount,
        closed_won.close_date,
        {{ sfdc_sync.month_start('closed_won.close_date') }} as close_month,
        closed_won.owner_id,
        users.user_name as owner_name,
        closed_won.account_id,
        accounts.account_name,
        closed_won.stage_name,
        closed_won.discount_percent,
        closed_won.last_modified_date,
        closed_won.synced_at

    from closed_won
    left join users on closed_won.owner_id = users.user_id
    left join accounts on closed_won.account_id = accounts.account_id

)

select * from final
