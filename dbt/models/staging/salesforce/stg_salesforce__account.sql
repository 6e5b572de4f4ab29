{%- set columns = sfdc_sync.column_names(source('salesforce', 'account')) %}

with

source as (

    select * from {{ source('salesforce', 'account') }}

),

renamed as (

    select

        ---------- ids
        id as account_id,
        masterrecordid as master_record_id,
        parentid as parent_id,
        ownerid as owner_id,
        createdbyid as created_by_id,
        lastmodifiedbyid as last_modified_by_id,
        ---------- text
        name as account_name,
        type as account_type,
        billingstreet as billing_street,
        billingcity as billing_city,
        billingstate as billing_state,
        billingpostalcode as billing_postal_code,
        billingcountry as billing_country,
        shippingstreet as shipping_street,
        shippingcity as shipping_city,
        shippingstate as shipping_state,
        shippingpostalcode as shipping_postal_code,
        shippingcountry as shipping_country,
        phone,
        fax,
        accountnumber as account_number,
        website,
        sic,
        industry,
        ownership,
        tickersymbol as ticker_symbol,
        description,
        rating,
        site,
        accountsource as account_source,
        {{ sfdc_sync.custom_field(columns, 'customer_tier__c', 'varchar') }} as customer_tier,
        {{ sfdc_sync.custom_field(columns, 'sla__c', 'varchar') }} as sla,
        {{ sfdc_sync.custom_field(columns, 'external_account_id__c', 'varchar') }}
            as external_account_id,
        {{ sfdc_sync.custom_field(columns, 'active__c', 'varchar') }} as active,
        ---------- numerics
        billinglatitude as billing_latitude,
        billinglongitude as billing_longitude,
        shippinglatitude as shipping_latitude,
        shippinglongitude as shipping_longitude,
        annualrevenue as annual_revenue,
        numberofemployees as number_of_employees,
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
