// The Container Apps environment the SMTP door runs in, created by `azd provision`. The container app itself is
// created by `azd deploy` (../smtp.bicep), once the real image is in the registry: a first revision never runs a
// placeholder, and provisioning never references an app that may not exist yet (see infra/README.md).

param name string
param location string = resourceGroup().location
param tags object = {}

@description('Infrastructure subnet of the environment. Empty: no custom VNet, so no external TCP ingress.')
param subnetResourceId string = ''

param logAnalyticsWorkspaceResourceId string

module environment 'br/public:avm/res/app/managed-environment:0.11.3' = {
  name: 'smtp-environment'
  params: {
    name: name
    location: location
    tags: tags
    infrastructureSubnetResourceId: subnetResourceId
    internal: false
    publicNetworkAccess: 'Enabled'
    zoneRedundant: false
    workloadProfiles: [
      {
        name: 'Consumption'
        workloadProfileType: 'Consumption'
      }
    ]
    // Logs go through the diagnostic setting below, so no workspace shared key is ever handed to the environment.
    appLogsConfiguration: {
      destination: 'azure-monitor'
    }
  }
}

resource environmentRef 'Microsoft.App/managedEnvironments@2024-03-01' existing = {
  name: name
}

resource environmentLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: environmentRef
  properties: {
    workspaceId: logAnalyticsWorkspaceResourceId
    logs: [
      {
        category: 'ContainerAppConsoleLogs'
        enabled: true
      }
      {
        category: 'ContainerAppSystemLogs'
        enabled: true
      }
    ]
  }
  dependsOn: [
    environment
  ]
}

output name string = environment.outputs.name
output resourceId string = environment.outputs.resourceId
output defaultDomain string = environment.outputs.defaultDomain
output staticIp string = environment.outputs.staticIp
