// The spool: one storage account holding the scans (blob), the job queue, the device registry and job records
// (tables), plus the Function app's host state and deployment package. Entra ID only: shared keys are off, so no
// connection string or SAS signed with an account key can exist. The names are fixed by the operator contract.

@description('Storage account name (3-24 lowercase letters and digits).')
param name string

param location string = resourceGroup().location
param tags object = {}

@description('Blob container the Flex Consumption plan deploys the Function app package from.')
param deploymentContainerName string

@description('Redundancy. LRS keeps three copies in one datacenter; choose ZRS where the region offers it and an outage of one zone must not pause intake.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
])
param skuName string = 'Standard_LRS'

@description('Lifecycle backstop for scans/: the retention timer deletes scans long before this.')
@minValue(1)
param scanBlobMaxAgeDays int = 8

var scansContainerName = 'scans'
var jobQueueName = 'scan-jobs'
var poisonQueueName = 'scan-jobs-poison' // where the Functions host moves a message after maxDequeueCount failures
var devicesTableName = 'devices'
var jobsTableName = 'jobs'
// Each sender mailbox's shared Graph budget (request slots, Retry-After, send pace) across workers.
var mailboxesTableName = 'mailboxes'

module account 'br/public:avm/res/storage/storage-account:0.8.3' = {
  name: 'storage-account'
  params: {
    name: name
    location: location
    tags: tags
    kind: 'StorageV2'
    skuName: skuName
    accessTier: 'Hot'
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    dnsEndpointType: 'Standard'
    // Devices never talk to storage; the Function app (Flex, no VNet) and the SMTP container reach it over its
    // public endpoint with Entra tokens. Put it behind private endpoints if your policy demands it.
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
    blobServices: {
      containers: [
        {
          name: scansContainerName
          publicAccess: 'None'
        }
        {
          name: deploymentContainerName
          publicAccess: 'None'
        }
      ]
      // A deleted scan must be gone: SCANGW_KEEP_SENT_HOURS=0 promises the bytes leave once the mail is sent.
      // Blob soft delete would keep every delivered scan recoverable for days, so it stays off.
      deleteRetentionPolicyEnabled: false
      containerDeleteRetentionPolicyEnabled: true
      containerDeleteRetentionPolicyDays: 7
    }
    queueServices: {
      queues: [
        {
          name: jobQueueName
        }
        {
          name: poisonQueueName
        }
      ]
    }
    tableServices: {
      tables: [
        {
          name: devicesTableName
        }
        {
          name: jobsTableName
        }
        {
          name: mailboxesTableName
        }
      ]
    }
    // Backstop only: the gateway's retention timer deletes sent scans at once and failed ones after
    // SCANGW_KEEP_FAILED_DAYS. This rule catches whatever a stopped timer or a bug leaves behind.
    managementPolicyRules: [
      {
        name: 'scans-backstop'
        enabled: true
        type: 'Lifecycle'
        definition: {
          actions: {
            baseBlob: {
              delete: {
                daysAfterModificationGreaterThan: scanBlobMaxAgeDays
              }
            }
          }
          filters: {
            blobTypes: [
              'blockBlob'
            ]
            prefixMatch: [
              '${scansContainerName}/'
            ]
          }
        }
      }
    ]
  }
}

output name string = account.outputs.name
output resourceId string = account.outputs.resourceId
// Endpoints follow from the name with the standard DNS endpoint type set above.
output blobServiceUri string = 'https://${account.outputs.name}.blob.${environment().suffixes.storage}'
output queueServiceUri string = 'https://${account.outputs.name}.queue.${environment().suffixes.storage}'
output tableServiceUri string = 'https://${account.outputs.name}.table.${environment().suffixes.storage}'
output scansContainerName string = scansContainerName
output deploymentContainerName string = deploymentContainerName
output jobQueueName string = jobQueueName
output poisonQueueName string = poisonQueueName
output devicesTableName string = devicesTableName
output jobsTableName string = jobsTableName
output mailboxesTableName string = mailboxesTableName
