{%- set columns = sfdc_sync.column_names(source('salesforce', 'lead')) %}

with

source as (

    select * from {{ source('salesforce', 'lead') }}

),

renamed as (

    select

        ---------- ids
        id as lead_id,
        masterrecordid as master_record_id,
        ownerid as owner_id,
        convertedaccountid as converted_account_id,
        convertedcontactid as converted_contact_id,
        convertedopportunityid as converted_opportunity_id,
        createdbyid as created_by_id,
        lastmodifiedbyid as last_modified_by_id,
        ---------- text
        lastname as last_name,
        firstname as first_name,
        salutation,
        {{ person_full_name() }} as lead_name,
        title,
        company,
        street,
        city,
        state,
        postalcode as postal_code,
        country,
        phone,
        mobilephone as mobile_phone,
        email,
        website,
        description,
        leadsource as lead_source,
        status,
        industry,
        rating,
        ---------- numerics
        latitude,
        longitude,
        annualrevenue as annual_revenue,
        numberofemployees as number_of_employees,
        {{ sfdc_sync.custom_field(columns, 'lead_score__c', 'decimal(18, 0)') }} as lead_score,
        ---------- booleans
        isconverted as is_converted,
        isunreadbyowner as is_unread_by_owner,
        ---------- dates
        converteddate as converted_date,
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
