// The delivery Function app on Flex Consumption (FC1): HTTPS intake, the queue-triggered delivery agent and the
// retention timer (function_app.py). It runs as the "delivery" user-assigned identity for everything: host
// storage, the spool, the deployment package, Application Insights and Microsoft Graph.

param name string
param planName string
param location string = resourceGroup().location
param tags object = {}

param blobServiceUri string
param queueServiceUri string
param tableServiceUri string

@description('Blob container of the storage account that holds the deployment package.')
param deploymentContainerName string

param identityResourceId string
param identityClientId string
param appInsightsName string

@allowed([
  '3.11'
  '3.12'
])
param pythonVersion string = '3.11'

@description('Scale-out cap per function group; see maximumInstanceCount below.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Concurrent HTTP uploads per instance (the Python default on Flex is 1).')
@minValue(1)
@maxValue(16)
param httpPerInstanceConcurrency int = 4

@description('Instance memory: 2048 MB (default) or 4096 MB.')
@allowed([
  2048
  4096
])
param instanceMemoryMB int = 2048

param senderMailbox string
param adminEmail string = ''
param graphCloud string = 'public'

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

// Every name here is read by the Functions host or the gateway (contract sections 3 and 7); nothing is a secret.
var appSettings = {
  // Host storage (leases, timer state, deployment bookkeeping): identity-based, no connection string.
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  AzureWebJobsStorage__blobServiceUri: blobServiceUri
  AzureWebJobsStorage__queueServiceUri: queueServiceUri
  AzureWebJobsStorage__tableServiceUri: tableServiceUri
  // The spool, and the queue trigger's connection="SCANGW_STORAGE": the same names the Functions host reads.
  SCANGW_STORAGE__credential: 'managedidentity'
  SCANGW_STORAGE__clientId: identityClientId
  SCANGW_STORAGE__blobServiceUri: blobServiceUri
  SCANGW_STORAGE__queueServiceUri: queueServiceUri
  SCANGW_STORAGE__tableServiceUri: tableServiceUri
  // azure-identity picks the user-assigned identity for Graph tokens.
  AZURE_CLIENT_ID: identityClientId
  SCANGW_SENDER: senderMailbox
  SCANGW_ADMIN_EMAIL: adminEmail
  SCANGW_CLOUD: graphCloud
  // Application Insights accepts Entra tokens only (local auth disabled); the host authenticates as the identity.
  APPLICATIONINSIGHTS_CONNECTION_STRING: appInsights.properties.ConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
  PYTHON_ENABLE_OPENTELEMETRY: 'true'
}

module plan 'br/public:avm/res/web/serverfarm:0.1.1' = {
  name: 'flex-plan'
  params: {
    name: planName
    location: location
    tags: tags
    sku: {
      name: 'FC1'
      tier: 'FlexConsumption'
    }
    reserved: true // Linux
  }
}

module functionApp 'br/public:avm/res/web/site:0.15.1' = {
  name: 'function-app'
  params: {
    kind: 'functionapp,linux'
    name: name
    location: location
    tags: union(tags, {
      'azd-service-name': 'api'
    })
    serverFarmResourceId: plan.outputs.resourceId
    managedIdentities: {
      systemAssigned: false
      userAssignedResourceIds: [
        identityResourceId
      ]
    }
    httpsOnly: true
    clientAffinityEnabled: false
    publicNetworkAccess: 'Enabled' // devices upload over HTTPS from the internet
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${blobServiceUri}/${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityResourceId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        // The cap applies per function group (HTTP intake, queue-triggered delivery). Exchange's per-mailbox
        // limits (4 concurrent requests, Retry-After, 30 sends a minute) do not depend on it: every instance
        // claims request slots and send times in the spool's shared "mailboxes" table. Flex accepts 1 to 1000
        // (event-driven-scaling#limit-scale-out; the floor of 40 of the preview is gone), hence @minValue(1); more
        // instances add intake throughput and parallelism across sender mailboxes, never more requests to one.
        maximumInstanceCount: maximumInstanceCount
        triggers: {
          http: {
            // The handler is async, so one instance serves several uploads; each buffered body can be 100 MB.
            perInstanceConcurrency: httpPerInstanceConcurrency
          }
        }
      }
      runtime: {
        name: 'python'
        version: pythonVersion
      }
    }
    siteConfig: {
      alwaysOn: false
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      // No ftpsState: Flex Consumption lists it among unsupported site properties and newer regional stamps reject
      // it (ARM error 51021). FTP is off anyway: the "ftp" publishing-credentials policy below disallows it.
    }
    // azd deploys with an Entra token; nothing needs FTP or basic-auth publishing credentials.
    basicPublishingCredentialsPolicies: [
      {
        name: 'ftp'
        allow: false
      }
      {
        name: 'scm'
        allow: false
      }
    ]
    appSettingsKeyValuePairs: appSettings
  }
}

output name string = functionApp.outputs.name
output resourceId string = functionApp.outputs.resourceId
output defaultHostname string = functionApp.outputs.defaultHostname
