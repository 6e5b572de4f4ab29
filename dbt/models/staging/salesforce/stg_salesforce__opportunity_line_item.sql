{%- set columns = sfdc_sync.column_names(source('salesforce', 'opportunitylineitem')) %}

with

source as (

    select * from {{ source('salesforce', 'opportunitylineitem') }}

),

renamed as (

    select

        ---------- ids
        id as opportunity_line_item_id,
        opportunityid as opportunity_id,
        pricebookentryid as pricebook_entry_id,
        product2id as product2_id,
        createdbyid as created_by_id,
        lastmodifiedbyid as last_modified_by_id,
        ---------- text
        productcode as product_code,
        description,
        {{ sfdc_sync.custom_field(columns, 'line_type__c', 'varchar') }} as line_type,
        ---------- numerics
        sortorder as sort_order,
        quantity,
        totalprice as total_price,
        unitprice as unit_price,
        listprice as list_price,
        discount,
        ---------- dates
        servicedate as service_date,
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
