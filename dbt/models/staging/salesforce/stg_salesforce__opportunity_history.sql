{%- set columns = sfdc_sync.column_names(source('salesforce_history', 'opportunity')) %}

with

source as (

    select * from {{ source('salesforce_history', 'opportunity') }}
    -- Versions in effect for no time at all are left out: two reads of one SystemModstamp
    -- second with different contents (a formula field moves without SystemModstamp) share
    -- a version time (DESIGN §4), so the earlier one closes where it opens. scd2 keeps it
    -- (every observed version); the history a consumer reads has one row per instant.
    where valid_to is null or valid_to > valid_from

),

renamed as (

    select

        ---------- ids
        id as opportunity_id,
        accountid as account_id,
        ownerid as owner_id,
        ---------- text
        name as opportunity_name,
        stagename as stage_name,
        type as opportunity_type,
        forecastcategoryname as forecast_category_name,
        {{ sfdc_sync.custom_field(columns, 'region__c', 'varchar') }} as region,
        ---------- numerics
        amount,
        probability,
        expectedrevenue as expected_revenue,
        {{ sfdc_sync.custom_field(columns, 'discount_percent__c', 'decimal(18, 2)') }}
            as discount_percent,
        ---------- booleans
        isclosed as is_closed,
        iswon as is_won,
        -- deleted versions are kept: "as of" a date after a delete must say so
        is_deleted,
        is_current,
        ---------- dates
        closedate as close_date,
        ---------- timestamps
        valid_from,
        valid_to,
        systemmodstamp as system_modstamp,
        ---------- sync metadata
        _version as sync_version,
        _synced_at as synced_at

    from source

)

select * from renamed
