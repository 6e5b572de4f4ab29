{%- set columns = sfdc_sync.column_names(source('salesforce', 'user')) %}

with

source as (

    select * from {{ source('salesforce', 'user') }}

),

renamed as (

    select

        ---------- ids
        id as user_id,
        managerid as manager_id,
        profileid as profile_id,
        userroleid as user_role_id,
        createdbyid as created_by_id,
        lastmodifiedbyid as last_modified_by_id,
        ---------- text
        username,
        lastname as last_name,
        firstname as first_name,
        {{ person_full_name() }} as user_name,
        companyname as company_name,
        division,
        department,
        title,
        street,
        city,
        state,
        postalcode as postal_code,
        country,
        email,
        phone,
        mobilephone as mobile_phone,
        alias,
        communitynickname as community_nickname,
        timezonesidkey as time_zone_sid_key,
        localesidkey as locale_sid_key,
        emailencodingkey as email_encoding_key,
        languagelocalekey as language_locale_key,
        usertype as user_type,
        employeenumber as employee_number,
        {{ sfdc_sync.custom_field(columns, 'sales_team__c', 'varchar') }} as sales_team,
        ---------- numerics
        latitude,
        longitude,
        ---------- booleans
        isactive as is_active,
        ---------- timestamps
        lastlogindate as last_login_date,
        createddate as created_date,
        lastmodifieddate as last_modified_date,
        systemmodstamp as system_modstamp,
        ---------- sync metadata
        _synced_at as synced_at

    from source
    where {{ sfdc_sync.not_deleted() }}

)

select * from renamed
