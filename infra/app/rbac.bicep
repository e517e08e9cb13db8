// Role assignments for one principal on the spool, each at the narrowest scope that works: the whole account,
// or one blob container, one queue, one table. Names are guid(scope, principal, role), so a re-deploy finds the
// same assignment instead of failing with RoleAssignmentExists.

@description('Object id of the managed identity (or person) receiving the roles.')
param principalId string

@description('ServicePrincipal for managed identities; User or ServicePrincipal for whoever runs azd.')
@allowed([
  'ServicePrincipal'
  'User'
])
param principalType string = 'ServicePrincipal'

param storageAccountName string

@description('Role definition ids granted on the whole storage account.')
param accountRoleIds array = []

param scansContainerName string = 'scans'
@description('Role definition ids granted on the scans container only.')
param scansContainerRoleIds array = []

param jobQueueName string = 'scan-jobs'
@description('Role definition ids granted on the scan-jobs queue only.')
param jobQueueRoleIds array = []

param jobsTableName string = 'jobs'
@description('Role definition ids granted on the jobs table only.')
param jobsTableRoleIds array = []

param devicesTableName string = 'devices'
@description('Role definition ids granted on the devices table only.')
param devicesTableRoleIds array = []

@description('Application Insights resource the principal publishes telemetry to with its Entra token. Empty: none.')
param appInsightsName string = ''

var monitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb'

resource storageAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: storageAccount
  name: 'default'
}

resource scansContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: scansContainerName
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' existing = {
  parent: storageAccount
  name: 'default'
}

resource jobQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' existing = {
  parent: queueService
  name: jobQueueName
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' existing = {
  parent: storageAccount
  name: 'default'
}

resource jobsTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' existing = {
  parent: tableService
  name: jobsTableName
}

resource devicesTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' existing = {
  parent: tableService
  name: devicesTableName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = if (!empty(appInsightsName)) {
  name: appInsightsName
}

resource accountAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for roleId in accountRoleIds: {
    name: guid(storageAccount.id, principalId, roleId)
    scope: storageAccount
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
      principalId: principalId
      principalType: principalType
    }
  }
]

resource scansContainerAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for roleId in scansContainerRoleIds: {
    name: guid(scansContainer.id, principalId, roleId)
    scope: scansContainer
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
      principalId: principalId
      principalType: principalType
    }
  }
]

resource jobQueueAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for roleId in jobQueueRoleIds: {
    name: guid(jobQueue.id, principalId, roleId)
    scope: jobQueue
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
      principalId: principalId
      principalType: principalType
    }
  }
]

resource jobsTableAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for roleId in jobsTableRoleIds: {
    name: guid(jobsTable.id, principalId, roleId)
    scope: jobsTable
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
      principalId: principalId
      principalType: principalType
    }
  }
]

resource devicesTableAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for roleId in devicesTableRoleIds: {
    name: guid(devicesTable.id, principalId, roleId)
    scope: devicesTable
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
      principalId: principalId
      principalType: principalType
    }
  }
]

// Application Insights has local (key) ingestion disabled: only Entra tokens with this role can send telemetry.
resource metricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(appInsightsName)) {
  name: guid(appInsights.id, principalId, monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisher)
    principalId: principalId
    principalType: principalType
  }
}
