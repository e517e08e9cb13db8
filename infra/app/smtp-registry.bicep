// Container registry for the SMTP image: azd builds ./Dockerfile and pushes here; the container app pulls with
// the intake identity. No admin user, no anonymous pull: Entra tokens only.

param name string
param location string = resourceGroup().location
param tags object = {}

@description('Object id of the identity the container app pulls with (intake).')
param pullPrincipalId string

@description('Object id of whoever runs azd (pushes the image). Empty: no grant.')
param pushPrincipalId string = ''

@allowed([
  'User'
  'ServicePrincipal'
])
param pushPrincipalType string = 'User'

var acrPull = '7f951dda-4ed3-4680-a7ca-43fe172d538d'
var acrPush = '8311e382-0749-4cb8-b61a-304f252e45ec'

module registry 'br/public:avm/res/container-registry/registry:0.9.3' = {
  name: 'registry'
  params: {
    name: name
    location: location
    tags: tags
    // Basic holds one small image cheaply; network rules, private endpoints and zone redundancy need Premium.
    acrSku: 'Basic'
    acrAdminUserEnabled: false
    anonymousPullEnabled: false
    publicNetworkAccess: 'Enabled'
    zoneRedundancy: 'Disabled'
  }
}

resource registryRef 'Microsoft.ContainerRegistry/registries@2023-07-01' existing = {
  name: name
}

resource pull 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(registryRef.id, pullPrincipalId, acrPull)
  scope: registryRef
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', acrPull)
    principalId: pullPrincipalId
    principalType: 'ServicePrincipal'
  }
  dependsOn: [
    registry
  ]
}

resource push 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(pushPrincipalId)) {
  name: guid(registryRef.id, pushPrincipalId, acrPush)
  scope: registryRef
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', acrPush)
    principalId: pushPrincipalId
    principalType: pushPrincipalType
  }
  dependsOn: [
    registry
  ]
}

output name string = registry.outputs.name
output loginServer string = registry.outputs.loginServer
