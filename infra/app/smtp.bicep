// The SMTP front door: `scangw smtp` in Azure Container Apps behind TCP ingress. Port 25 (and 587) map to the
// container's unprivileged 2525 (and 2587); with TLS on, 465 maps to the implicit-TLS listener on 2465. It runs as
// the "intake" identity, which may store scans and enqueue jobs but has no mail rights.

param name string
param environmentName string
param location string = resourceGroup().location
param tags object = {}

@description('Image to run; empty on the first provision, before azd has pushed one.')
param image string = ''
param registryServer string

@description('Infrastructure subnet of the environment. Empty: no custom VNet, so no external TCP ingress.')
param subnetResourceId string = ''

@description('Expose the SMTP ports to the internet (needs subnetResourceId).')
param external bool = true

@description('SCANGW_SMTP_PROXY_CIDRS: the infrastructure subnet, where the TCP ingress proxies connect from.')
param proxyCidrs string = ''

@description('Public CIDRs allowed to connect. Empty: any address.')
param allowedCidrs array = []

param identityResourceId string
param identityClientId string
param blobServiceUri string
param queueServiceUri string
param tableServiceUri string

@description('SCANGW_SENDER: the intake checks recipients against the sender mailbox\'s domain.')
param senderMailbox string

param appInsightsName string
param logAnalyticsWorkspaceResourceId string

@description('Mount smtp-tls-cert and smtp-tls-key from the vault and serve STARTTLS and implicit TLS on 465.')
param tlsEnabled bool = false
param keyVaultUri string = ''

@description('At least one replica is always up: a device\'s TCP connection cannot wait for a cold start.')
@minValue(1)
@maxValue(10)
param maxReplicas int = 2

// The placeholder azd templates use until `azd deploy` pushes the real image.
var placeholderImage = 'mcr.microsoft.com/azuredocs/containerapps-helloworld:latest'
var tlsDirectory = '/mnt/tls'

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

var listenArgs = [
  '--listen'
  '0.0.0.0:2525'
  '--listen'
  '0.0.0.0:2587'
]
// Implicit TLS cannot start without a certificate (the gateway refuses), so the listener exists only with TLS on.
var implicitTlsArgs = tlsEnabled ? [
  '--implicit-tls'
  '0.0.0.0:2465'
] : []

var submissionPort = {
  targetPort: 2587
  exposedPort: 587
  external: external
}
var smtpsPort = {
  targetPort: 2465
  exposedPort: 465
  external: external
}

var storageEnv = [
  {
    name: 'SCANGW_STORAGE__credential'
    value: 'managedidentity'
  }
  {
    name: 'SCANGW_STORAGE__clientId'
    value: identityClientId
  }
  {
    name: 'SCANGW_STORAGE__blobServiceUri'
    value: blobServiceUri
  }
  {
    name: 'SCANGW_STORAGE__queueServiceUri'
    value: queueServiceUri
  }
  {
    name: 'SCANGW_STORAGE__tableServiceUri'
    value: tableServiceUri
  }
  {
    name: 'AZURE_CLIENT_ID'
    value: identityClientId
  }
  {
    name: 'SCANGW_SENDER'
    value: senderMailbox
  }
  {
    name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
    value: appInsights.properties.ConnectionString
  }
  {
    name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
    value: 'ClientId=${identityClientId};Authorization=AAD'
  }
]
var proxyEnv = empty(proxyCidrs) ? [] : [
  {
    name: 'SCANGW_SMTP_PROXY_CIDRS'
    value: proxyCidrs
  }
]
var tlsEnv = tlsEnabled ? [
  {
    name: 'SCANGW_SMTP_TLS_CERT'
    value: '${tlsDirectory}/tls.crt'
  }
  {
    name: 'SCANGW_SMTP_TLS_KEY'
    value: '${tlsDirectory}/tls.key'
  }
] : []

// Key Vault references (versionless: a renewed secret is picked up without a new deployment), read with the
// intake identity and mounted as files; the values never pass through this template.
var tlsSecrets = tlsEnabled ? [
  {
    name: 'smtp-tls-cert'
    keyVaultUrl: '${keyVaultUri}secrets/smtp-tls-cert'
    identity: identityResourceId
  }
  {
    name: 'smtp-tls-key'
    keyVaultUrl: '${keyVaultUri}secrets/smtp-tls-key'
    identity: identityResourceId
  }
] : []
var tlsVolumes = tlsEnabled ? [
  {
    name: 'tls'
    storageType: 'Secret'
    secrets: [
      {
        secretRef: 'smtp-tls-cert'
        path: 'tls.crt'
      }
      {
        secretRef: 'smtp-tls-key'
        path: 'tls.key'
      }
    ]
  }
] : []
var tlsMounts = tlsEnabled ? [
  {
    volumeName: 'tls'
    mountPath: tlsDirectory
  }
] : []

var ipRules = [
  for (cidr, index) in allowedCidrs: {
    name: 'allow-${index}'
    action: 'Allow'
    ipAddressRange: cidr
  }
]

module environment 'br/public:avm/res/app/managed-environment:0.11.3' = {
  name: 'smtp-environment'
  params: {
    name: environmentName
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
  name: environmentName
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

module app 'br/public:avm/res/app/container-app:0.18.1' = {
  name: 'smtp-app'
  params: {
    name: name
    location: location
    tags: union(tags, {
      'azd-service-name': 'smtp'
    })
    environmentResourceId: environment.outputs.resourceId
    workloadProfileName: 'Consumption'
    managedIdentities: {
      userAssignedResourceIds: [
        identityResourceId
      ]
    }
    registries: [
      {
        server: registryServer
        identity: identityResourceId
      }
    ]
    activeRevisionsMode: 'Single'
    ingressExternal: external
    ingressTransport: 'tcp'
    ingressTargetPort: 2525
    exposedPort: 25
    additionalPortMappings: tlsEnabled ? [submissionPort, smtpsPort] : [submissionPort]
    ipSecurityRestrictions: ipRules
    scaleSettings: {
      minReplicas: 1
      maxReplicas: maxReplicas
      rules: [
        {
          name: 'smtp-connections'
          tcp: {
            metadata: {
              concurrentConnections: '50'
            }
          }
        }
      ]
    }
    secrets: tlsSecrets
    volumes: tlsVolumes
    containers: [
      {
        name: 'smtp'
        image: empty(image) ? placeholderImage : image
        // The image's own CMD also opens the implicit-TLS listener; set the listeners here to match tlsEnabled.
        command: [
          'python'
          '-m'
          'gateway'
          'smtp'
        ]
        args: concat(listenArgs, implicitTlsArgs)
        env: concat(storageEnv, proxyEnv, tlsEnv)
        resources: {
          cpu: json('0.5')
          memory: '1Gi'
        }
        volumeMounts: tlsMounts
        probes: [
          {
            type: 'Liveness'
            tcpSocket: {
              port: 2525
            }
            initialDelaySeconds: 10
            periodSeconds: 30
          }
        ]
      }
    ]
  }
  dependsOn: [
    environmentLogs
  ]
}

output name string = app.outputs.name
output fqdn string = app.outputs.fqdn
output staticIp string = environment.outputs.staticIp
output environmentDefaultDomain string = environment.outputs.defaultDomain
