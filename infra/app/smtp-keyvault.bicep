// Key Vault for the SMTP door's TLS certificate and key (PEM secrets smtp-tls-cert and smtp-tls-key). The
// container app mounts them as files through Key Vault references, read with the intake identity; nothing
// else lives here. Access is by Azure RBAC only, no access policies.

param name string
param location string = resourceGroup().location
param tags object = {}

@description('Object id of the identity that reads the secrets (intake).')
param readerPrincipalId string

@description('Object id of whoever runs azd (uploads the certificate). Empty: no grant.')
param officerPrincipalId string = ''

@allowed([
  'User'
  'ServicePrincipal'
])
param officerPrincipalType string = 'User'

var secretsUser = '4633458b-17de-408a-b874-0445c86b69e6'
var secretsOfficer = 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'

module vault 'br/public:avm/res/key-vault/vault:0.13.3' = {
  name: 'vault'
  params: {
    name: name
    location: location
    tags: tags
    sku: 'standard'
    enableRbacAuthorization: true
    enableVaultForDeployment: false
    enableVaultForDiskEncryption: false
    enableVaultForTemplateDeployment: false
    enableSoftDelete: true
    softDeleteRetentionInDays: 7
    // Off so `azd down --purge` can remove the vault and a new `azd up` can reuse the name. The vault holds only
    // a certificate you also keep elsewhere; turn it on if your policy requires it.
    enablePurgeProtection: false
    // Container Apps fetches Key Vault references over the public endpoint; RBAC guards every secret.
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

resource vaultRef 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: name
}

resource reader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vaultRef.id, readerPrincipalId, secretsUser)
  scope: vaultRef
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', secretsUser)
    principalId: readerPrincipalId
    principalType: 'ServicePrincipal'
  }
  dependsOn: [
    vault
  ]
}

resource officer 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(officerPrincipalId)) {
  name: guid(vaultRef.id, officerPrincipalId, secretsOfficer)
  scope: vaultRef
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', secretsOfficer)
    principalId: officerPrincipalId
    principalType: officerPrincipalType
  }
  dependsOn: [
    vault
  ]
}

output name string = vault.outputs.name
output uri string = vault.outputs.uri
