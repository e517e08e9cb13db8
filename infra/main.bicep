// scangw on Azure, deployed by `azd up`. This file only orchestrates; each module under app/ owns one concern.
//
//   device --SMTP 25/587/465--> [smtp: Container App, identity "intake"] --\
//                                                                          >--> [storage: blob "scans", queue "scan-jobs",
//   device --HTTPS------------> [api: Function app,  identity "delivery"] --/     tables "devices", "jobs", "mailboxes"]
//                               [api: queue trigger, identity "delivery"] <-- scan-jobs --> Microsoft Graph (draft, send)
//
// Two identities: the internet-facing SMTP door may write scans and enqueue jobs but holds no mail rights;
// the delivery Function holds the mail rights (granted in Exchange, see scripts/grant-mailbox-access.ps1).
// No shared keys, no connection strings with secrets, no client secrets anywhere.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; with the subscription and region it seeds every resource name.')
param environmentName string

@minLength(1)
@description('Region for every resource. It must offer the Flex Consumption plan: az functionapp list-flexconsumption-locations.')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Object id of whoever runs azd. Gets data access to the spool (to run `scangw devices` and `scangw jobs` from their machine), AcrPush and Key Vault Secrets Officer. Empty: no grant.')
param principalId string = ''

@description('Kind of principal behind principalId: a person (User) or a pipeline (ServicePrincipal).')
@allowed([
  'User'
  'ServicePrincipal'
])
param principalType string = 'User'

@minLength(3)
@description('Shared mailbox (UPN) the gateway sends from when a device names none; also sends failure notices. Becomes SCANGW_SENDER.')
param senderMailbox string

@description('Receives failure notices and alerts (SCANGW_ADMIN_EMAIL). Empty: notices go to the scanning user only.')
param adminEmail string = ''

@description('Opt-in, for sites that scan every day: alert the admin when no device sent a scan for 3 days.')
param noScanAlertEnabled bool = false

@description('Microsoft cloud of the Exchange Online tenant: picks the Graph endpoint and token scope (SCANGW_CLOUD).')
@allowed([
  'public'
  'usgov'
  'usgovdod'
  'china'
])
param graphCloud string = 'public'

@description('Deploy the SMTP front door (Container Apps, container registry, Key Vault for its TLS certificate). False: HTTPS intake only.')
param deploySmtp bool = true

@description('Put the SMTP environment in its own virtual network. Container Apps accepts external TCP ingress (ports 25/587/465 from the internet) only in a custom VNet; false leaves the SMTP door reachable only from inside its environment.')
param smtpVnetEnabled bool = true

@description('Serve STARTTLS and implicit TLS (465) with your own certificate: Key Vault secrets smtp-tls-cert and smtp-tls-key (PEM) must be in the deployed vault before it is set to true (see infra/README.md). False: the door makes a self-signed certificate for its host names at start, so TLS is on either way.')
param smtpTlsEnabled bool = false

@description('Public CIDRs allowed to reach the SMTP ports (e.g. the offices where the scanners stand). Empty: any address.')
param smtpAllowedCidrs array = []

@description('DNS name devices use for the SMTP door (a CNAME to SMTP_FQDN or an A record to SMTP_PUBLIC_IP). Goes into the self-signed certificate next to the app FQDN. Empty: the app FQDN only.')
param smtpHostName string = ''

@description('Accept AUTH before TLS, so passwords cross the network in clear text: only for old devices that cannot do TLS, and only together with smtpAllowedCidrs (the deployment fails otherwise).')
param smtpAllowPlaintextAuth bool = false

@description('Address space of the SMTP environment virtual network.')
param smtpVnetAddressPrefix string = '10.60.0.0/16'

@description('Infrastructure subnet of the SMTP environment. Behind Container Apps TCP ingress every client appears with an address from here, so it also becomes SCANGW_SMTP_PROXY_CIDRS.')
param smtpSubnetAddressPrefix string = '10.60.0.0/23'

@description('OPT-IN TRIAL MODE. True grants the delivery identity the Graph application roles Mail.Send and Mail.ReadWrite TENANT-WIDE (it could send as every mailbox). The default is false: scope mail rights to the sender mailboxes with scripts/grant-mailbox-access.ps1. Needs a deployer allowed to grant Graph app roles.')
param grantTenantWideMailSend bool = false

@description('Flex Consumption scale-out cap, per function group. Flex accepts 1 to 1000 (learn.microsoft.com/azure/azure-functions/event-driven-scaling#limit-scale-out; preview once required at least 40); 40 is this template\'s choice, not a platform floor. Exchange\'s per-mailbox limits hold at any value: instances share each sender mailbox\'s request slots, Retry-After windows and send pace through the spool\'s "mailboxes" table.')
@minValue(1)
@maxValue(1000)
param functionMaximumInstanceCount int = 40

@description('Concurrent HTTP uploads per Function instance. The Functions worker buffers each body (up to 100 MB) in memory, so this times the largest upload must fit in the instance memory with room to spare.')
@minValue(1)
@maxValue(16)
param functionHttpConcurrency int = 4

@description('Python version of the Function app (Flex Consumption takes it from functionAppConfig).')
@allowed([
  '3.11'
  '3.12'
])
param pythonVersion string = '3.11'

@description('Lifecycle backstop: blobs under scans/ older than this many days are deleted by the platform even if the retention timer never ran. Keep it above SCANGW_KEEP_FAILED_DAYS (default 7).')
@minValue(1)
param scanBlobMaxAgeDays int = 8

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
var functionAppName = 'func-scangw-${resourceToken}'
var deploymentContainerName = 'app-package-${take(functionAppName, 32)}-${take(toLower(uniqueString(functionAppName, resourceToken)), 7)}'
var smtpAppName = 'ca-smtp-${resourceToken}'

// Secure by default: TLS is always offered (the admin's certificate, else a self-signed one) and AUTH waits for it.
// Plaintext AUTH only on explicit request and only from listed ranges; the open combination stops the deployment
// with this message (fail(): learn.microsoft.com/azure/azure-resource-manager/bicep/bicep-functions-flow-control;
// the Bicep release that introduced it and whether ARM evaluates it before creating anything: UNVERIFIED here.
// app/smtp.bicep repeats the check, so the container app itself is never created in the open combination).
var smtpPlaintextAuth = (deploySmtp && smtpAllowPlaintextAuth && empty(smtpAllowedCidrs)) ? fail('smtpAllowPlaintextAuth=true needs smtpAllowedCidrs: AUTH before TLS from any address would send device passwords over the internet in clear text. List your offices\' public ranges in smtpAllowedCidrs, or leave smtpAllowPlaintextAuth false.') : smtpAllowPlaintextAuth

// Built-in Azure role definition ids (the same in every tenant).
var roles = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  storageQueueDataMessageSender: 'c6a89b2d-59bc-44d0-9896-0f6e12d7b80a'
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  storageTableDataReader: '76199698-9eea-4c19-bc75-cec21354c6b6'
}

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: 'rg-${environmentName}'
  location: location
  tags: tags
}

// ---------- identities: who may do what is decided here and in the rbac modules below ----------

module deliveryIdentity 'br/public:avm/res/managed-identity/user-assigned-identity:0.4.1' = {
  name: 'identity-delivery'
  scope: rg
  params: {
    name: 'id-delivery-${resourceToken}'
    location: location
    tags: tags
  }
}

module intakeIdentity 'br/public:avm/res/managed-identity/user-assigned-identity:0.4.1' = {
  name: 'identity-intake'
  scope: rg
  params: {
    name: 'id-intake-${resourceToken}'
    location: location
    tags: tags
  }
}

// ---------- shared services ----------

module monitoring './app/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: 'log-${resourceToken}'
    appInsightsName: 'appi-${resourceToken}'
    location: location
    tags: tags
  }
}

module alerts './app/alerts.bicep' = if (!empty(adminEmail)) {
  name: 'alerts'
  scope: rg
  params: {
    actionGroupName: 'ag-${resourceToken}'
    alertNamePrefix: 'alert-${resourceToken}'
    appInsightsResourceId: monitoring.outputs.appInsightsResourceId
    adminEmail: adminEmail
    noScanAlertEnabled: noScanAlertEnabled
    location: location
    tags: tags
  }
}

// The admin's workbook (scans, deliveries, failures with remedies, latency, throttling, queue, silent devices).
module workbook './app/workbook.bicep' = {
  name: 'workbook'
  scope: rg
  params: {
    name: 'scangw ${environmentName}'
    appInsightsResourceId: monitoring.outputs.appInsightsResourceId
    location: location
    tags: tags
  }
}

module storage './app/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: 'st${resourceToken}'
    location: location
    tags: tags
    deploymentContainerName: deploymentContainerName
    scanBlobMaxAgeDays: scanBlobMaxAgeDays
  }
}

// ---------- role assignments ----------

// Delivery (the Function app): the Functions host keeps its own state in this account (AzureWebJobsStorage needs
// Blob Data Owner; queues and tables for the triggers and diagnostics), reads the deployment package, and runs the
// delivery agent: reads and deletes scans, drains scan-jobs, writes job records, signs download links.
module deliveryAccess './app/rbac.bicep' = {
  name: 'rbac-delivery'
  scope: rg
  params: {
    principalId: deliveryIdentity.outputs.principalId
    storageAccountName: storage.outputs.name
    accountRoleIds: [
      roles.storageBlobDataOwner // also signs user-delegation SAS download links (SCANGW_LINK_HOURS)
      roles.storageQueueDataContributor
      roles.storageTableDataContributor
    ]
    appInsightsName: monitoring.outputs.appInsightsName
  }
}

// Intake (the SMTP container, internet-facing): only what accept() needs, each on the one container, queue or
// table it touches. It cannot read the deployment package (that would let it replace the Function's code and so
// borrow its mail rights), cannot change the device registry (that would let it allow itself any recipient),
// cannot read or delete queued jobs, and has no Graph or Exchange rights at all.
module intakeAccess './app/rbac.bicep' = if (deploySmtp) {
  name: 'rbac-intake'
  scope: rg
  params: {
    principalId: intakeIdentity.outputs.principalId
    storageAccountName: storage.outputs.name
    scansContainerName: storage.outputs.scansContainerName
    scansContainerRoleIds: [
      roles.storageBlobDataContributor // write the scan; delete it again if enqueueing fails
    ]
    jobQueueName: storage.outputs.jobQueueName
    jobQueueRoleIds: [
      roles.storageQueueDataMessageSender // enqueue only
    ]
    jobsTableName: storage.outputs.jobsTableName
    jobsTableRoleIds: [
      roles.storageTableDataContributor // write the job record
    ]
    devicesTableName: storage.outputs.devicesTableName
    devicesTableRoleIds: [
      roles.storageTableDataReader // authenticate devices, read their recipient policy
    ]
    appInsightsName: monitoring.outputs.appInsightsName
  }
}

// The person running azd administers devices and jobs from their own machine (`scangw devices add`, `jobs retry`).
module deployerAccess './app/rbac.bicep' = if (!empty(principalId)) {
  name: 'rbac-deployer'
  scope: rg
  params: {
    principalId: principalId
    principalType: principalType
    storageAccountName: storage.outputs.name
    accountRoleIds: [
      roles.storageBlobDataContributor
      roles.storageQueueDataContributor
      roles.storageTableDataContributor
    ]
  }
}

// ---------- the delivery Function app (HTTPS intake + queue-triggered delivery + retention timer) ----------

module api './app/api.bicep' = {
  name: 'api'
  scope: rg
  params: {
    name: functionAppName
    planName: 'plan-${resourceToken}'
    location: location
    tags: tags
    blobServiceUri: storage.outputs.blobServiceUri
    queueServiceUri: storage.outputs.queueServiceUri
    tableServiceUri: storage.outputs.tableServiceUri
    deploymentContainerName: storage.outputs.deploymentContainerName
    identityResourceId: deliveryIdentity.outputs.resourceId
    identityClientId: deliveryIdentity.outputs.clientId
    appInsightsName: monitoring.outputs.appInsightsName
    pythonVersion: pythonVersion
    maximumInstanceCount: functionMaximumInstanceCount
    httpPerInstanceConcurrency: functionHttpConcurrency
    senderMailbox: senderMailbox
    adminEmail: adminEmail
    graphCloud: graphCloud
  }
  dependsOn: [
    deliveryAccess
  ]
}

// Opt-in trial mode only: tenant-wide Graph application roles through the Microsoft Graph Bicep extension.
// A managed identity created seconds earlier may not have replicated in Entra yet, and Graph then refuses the
// assignment once ("Not a valid reference update", msgraph-bicep-types issue 193). So the grant waits for the
// slowest work after the identity exists (the Function app, the role assignments, and the Container Apps
// environment when the SMTP door is deployed: minutes) instead of racing it.
module graphMailRoles './app/graph-mail-roles.bicep' = if (grantTenantWideMailSend) {
  name: 'graph-mail-roles'
  scope: rg
  params: {
    principalId: deliveryIdentity.outputs.principalId
  }
  dependsOn: [
    api
    deliveryAccess
    smtpEnvironment
  ]
}

// ---------- the SMTP front door (optional) ----------

module smtpNetwork './app/smtp-network.bicep' = if (deploySmtp && smtpVnetEnabled) {
  name: 'smtp-network'
  scope: rg
  params: {
    name: 'vnet-${resourceToken}'
    location: location
    tags: tags
    addressPrefix: smtpVnetAddressPrefix
    subnetAddressPrefix: smtpSubnetAddressPrefix
  }
}

module smtpRegistry './app/smtp-registry.bicep' = if (deploySmtp) {
  name: 'smtp-registry'
  scope: rg
  params: {
    name: 'cr${resourceToken}'
    location: location
    tags: tags
    pullPrincipalId: intakeIdentity.outputs.principalId
    pushPrincipalId: principalId
    pushPrincipalType: principalType
  }
}

module smtpVault './app/smtp-keyvault.bicep' = if (deploySmtp) {
  name: 'smtp-keyvault'
  scope: rg
  params: {
    name: 'kv-${resourceToken}'
    location: location
    tags: tags
    readerPrincipalId: intakeIdentity.outputs.principalId
    officerPrincipalId: principalId
    officerPrincipalType: principalType
  }
}

// The environment only: the container app is created by `azd deploy` through ../smtp.bicep with the image azd has
// just pushed, so provisioning neither starts a placeholder nor references an app that may not exist yet.
module smtpEnvironment './app/smtp-environment.bicep' = if (deploySmtp) {
  name: 'smtp-environment'
  scope: rg
  params: {
    name: 'cae-${resourceToken}'
    location: location
    tags: tags
    subnetResourceId: deploySmtp && smtpVnetEnabled ? smtpNetwork.outputs.subnetResourceId : ''
    logAnalyticsWorkspaceResourceId: monitoring.outputs.logAnalyticsWorkspaceResourceId
  }
}

// Container Apps names an app <app>.<environment default domain>, with ".internal" before the domain for
// internal-only ingress (learn.microsoft.com/azure/container-apps/connect-apps; the internal form: UNVERIFIED).
var smtpFqdn = deploySmtp ? (smtpVnetEnabled ? '${smtpAppName}.${smtpEnvironment.outputs.defaultDomain}' : '${smtpAppName}.internal.${smtpEnvironment.outputs.defaultDomain}') : ''
// The names in the door's self-signed certificate: the name devices are told to use, then the app's own FQDN.
var smtpHostNames = empty(smtpHostName) ? smtpFqdn : '${smtpHostName},${smtpFqdn}'

// ---------- outputs: azd stores them in .azure/<env>/.env (no secrets, no keys) ----------

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = api.outputs.name
output SERVICE_API_NAME string = api.outputs.name
output SCANGW_HTTP_URL string = 'https://${api.outputs.defaultHostname}/api/scans'
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output SCANGW_STORAGE__blobServiceUri string = storage.outputs.blobServiceUri
output SCANGW_STORAGE__queueServiceUri string = storage.outputs.queueServiceUri
output SCANGW_STORAGE__tableServiceUri string = storage.outputs.tableServiceUri
output SCANGW_SENDER string = senderMailbox
output SCANGW_CLOUD string = graphCloud
output DELIVERY_IDENTITY_CLIENT_ID string = deliveryIdentity.outputs.clientId
output DELIVERY_IDENTITY_PRINCIPAL_ID string = deliveryIdentity.outputs.principalId
output INTAKE_IDENTITY_CLIENT_ID string = intakeIdentity.outputs.clientId
output INTAKE_IDENTITY_PRINCIPAL_ID string = intakeIdentity.outputs.principalId
output GRAPH_TENANT_WIDE_MAIL_GRANTED bool = grantTenantWideMailSend
output SMTP_DEPLOYED bool = deploySmtp
output SMTP_FQDN string = smtpFqdn
output SMTP_PUBLIC_IP string = (deploySmtp && smtpVnetEnabled) ? smtpEnvironment.outputs.staticIp : ''
output SMTP_TLS_ENABLED bool = deploySmtp && smtpTlsEnabled
output AZURE_CONTAINER_REGISTRY_ENDPOINT string = deploySmtp ? smtpRegistry.outputs.loginServer : ''
output AZURE_KEY_VAULT_NAME string = deploySmtp ? smtpVault.outputs.name : ''
// What ../smtp.parameters.json hands to the container app at `azd deploy` (none of it is a secret).
output SMTP_APP_NAME string = deploySmtp ? smtpAppName : ''
output SMTP_ENVIRONMENT_ID string = deploySmtp ? smtpEnvironment.outputs.resourceId : ''
output SMTP_KEY_VAULT_URI string = deploySmtp ? smtpVault.outputs.uri : ''
output SMTP_EXTERNAL bool = smtpVnetEnabled
output SMTP_PROXY_CIDRS string = (deploySmtp && smtpVnetEnabled) ? smtpSubnetAddressPrefix : ''
output SMTP_ALLOWED_CIDRS string = join(smtpAllowedCidrs, ',')
output SMTP_HOST_NAMES string = smtpHostNames
output SMTP_PLAINTEXT_AUTH_ALLOWED bool = smtpPlaintextAuth
output INTAKE_IDENTITY_RESOURCE_ID string = intakeIdentity.outputs.resourceId
output AZURE_APPLICATION_INSIGHTS_NAME string = monitoring.outputs.appInsightsName
