{%- set columns = sfdc_sync.column_names(source('salesforce', 'opportunity')) %}

with

source as (

    select * from {{ source('salesforce', 'opportunity') }}

),

renamed as (

    select

        ---------- ids
        id as opportunity_id,
        accountid as account_id,
        ownerid as owner_id,
        createdbyid as created_by_id,
        lastmodifiedbyid as last_modified_by_id,
        ---------- text
        name as opportunity_name,
        description,
        stagename as stage_name,
        type as opportunity_type,
        nextstep as next_step,
        leadsource as lead_source,
        forecastcategoryname as forecast_category_name,
        {{ sfdc_sync.custom_field(columns, 'competitor__c', 'varchar') }} as competitor,
        {{ sfdc_sync.custom_field(columns, 'region__c', 'varchar') }} as region,
        ---------- numerics
        amount,
        probability,
        expectedrevenue as expected_revenue,
        totalopportunityquantity as total_opportunity_quantity,
        fiscalquarter as fiscal_quarter,
        fiscalyear as fiscal_year,
        {{ sfdc_sync.custom_field(columns, 'discount_percent__c', 'decimal(18, 2)') }}
            as discount_percent,
        {{ sfdc_sync.custom_field(columns, 'contract_term_months__c', 'decimal(18, 0)') }}
            as contract_term_months,
        ---------- booleans
        isprivate as is_private,
        isclosed as is_closed,
        iswon as is_won,
        ---------- dates
        closedate as close_date,
        ---------- timestamps
        createddate as created_date,
        lastmodifieddate as last_modified_date,
        systemmodstamp as system_modstamp,
        ---------- sync metadata
        _synced_at as synced_at

    from source
    where {{ sfdc_sync.not_deleted() }}

)

select * from renamed
