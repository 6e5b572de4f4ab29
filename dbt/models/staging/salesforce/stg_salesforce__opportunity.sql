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
        competitor__c as competitor,
        region__c as region,
        ---------- numerics
        amount,
        probability,
        expectedrevenue as expected_revenue,
        totalopportunityquantity as total_opportunity_quantity,
        fiscalquarter as fiscal_quarter,
        fiscalyear as fiscal_year,
        discount_percent__c as discount_percent,
        contract_term_months__c as contract_term_months,
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
    where not is_deleted

)

select * from renamed
