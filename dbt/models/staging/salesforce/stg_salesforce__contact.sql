{%- set columns = sfdc_sync.column_names(source('salesforce', 'contact')) %}

with

source as (

    select * from {{ source('salesforce', 'contact') }}

),

renamed as (

    select

        ---------- ids
        id as contact_id,
        masterrecordid as master_record_id,
        accountid as account_id,
        reportstoid as reports_to_id,
        ownerid as owner_id,
        createdbyid as created_by_id,
        lastmodifiedbyid as last_modified_by_id,
        ---------- text
        lastname as last_name,
        firstname as first_name,
        salutation,
        {{ person_full_name() }} as contact_name,
        mailingstreet as mailing_street,
        mailingcity as mailing_city,
        mailingstate as mailing_state,
        mailingpostalcode as mailing_postal_code,
        mailingcountry as mailing_country,
        phone,
        mobilephone as mobile_phone,
        email,
        title,
        department,
        leadsource as lead_source,
        description,
        {{ sfdc_sync.custom_field(columns, 'preferred_language__c', 'varchar') }}
            as preferred_language,
        ---------- numerics
        mailinglatitude as mailing_latitude,
        mailinglongitude as mailing_longitude,
        {{ sfdc_sync.custom_field(columns, 'contact_score__c', 'decimal(18, 0)') }}
            as contact_score,
        ---------- booleans
        hasoptedoutofemail as has_opted_out_of_email,
        donotcall as do_not_call,
        ---------- dates
        birthdate,
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
