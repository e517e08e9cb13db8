// The SMTP front door: `scangw smtp` in Azure Container Apps behind TCP ingress. Port 25 (and 587) map to the
// container's unprivileged 2525 (and 2587); 465 maps to the implicit-TLS listener on 2465. It runs as the
// "intake" identity, which may store scans and enqueue jobs but has no mail rights.
//
// TLS is always on: with the admin's certificate from Key Vault (tlsEnabled), else with a self-signed certificate
// the door makes for its own host names at start (SCANGW_SMTP_TLS_SELF_SIGNED), kept in the storage account so every
// replica serves the same one (gateway/intake/shared_certificate.py). AUTH is refused before TLS unless
// allowPlaintextAuth, which needs source ranges (the open combination fails the deployment).
//
// azd deploys this module through ../smtp.bicep once it has pushed the image. Given no image it starts the
// placeholder exactly as the placeholder expects (its own port, no command, arguments, probes, secrets or
// settings written for the gateway), so a revision on the placeholder never crash-loops.

param name string
param location string = resourceGroup().location
param tags object = {}

param environmentResourceId string

@description('Image to run. Empty: the public placeholder, started as it is.')
param image string = ''
param registryServer string

@description('Expose the SMTP ports to the internet (the environment needs a custom VNet).')
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

@description('Mount smtp-tls-cert and smtp-tls-key from the vault. False: the door makes a self-signed certificate.')
param tlsEnabled bool = false
param keyVaultUri string = ''

@description('SCANGW_SMTP_TLS_SELF_SIGNED: comma-separated host names devices use (custom name, app FQDN).')
param selfSignedHosts string = ''

@description('Accept AUTH before TLS (SCANGW_SMTP_REQUIRE_TLS_AUTH=0). Only with allowedCidrs.')
param allowPlaintextAuth bool = false

@description('At least one replica is always up: a device\'s TCP connection cannot wait for a cold start.')
@minValue(1)
@maxValue(10)
param maxReplicas int = 2

// The placeholder azd templates use; it serves HTTP on port 80 (platform facts, section 12).
var placeholderImage = 'mcr.microsoft.com/azuredocs/containerapps-helloworld:latest'
var placeholderPort = 80
var isPlaceholder = empty(image)
var tlsDirectory = '/mnt/tls'

// Refuse, rather than deploy, a door that would take passwords in clear text from the whole internet, or one
// that has no certificate at all. fail() stops the deployment with this message (Bicep flow-control function).
var authPolicy = (allowPlaintextAuth && empty(allowedCidrs)) ? fail('allowPlaintextAuth needs allowedCidrs: plaintext AUTH from any address would send device passwords in clear text over the internet.') : (allowPlaintextAuth ? '0' : '1')
var selfSigned = (empty(selfSignedHosts) && !tlsEnabled) ? fail('Without a Key Vault certificate (tlsEnabled) the door needs selfSignedHosts for its own certificate.') : selfSignedHosts

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

// Implicit TLS on 2465 always has a certificate: the admin's, or the door's own.
var listenArgs = [
  '--listen'
  '0.0.0.0:2525'
  '--listen'
  '0.0.0.0:2587'
  '--implicit-tls'
  '0.0.0.0:2465'
]

var portMappings = [
  {
    targetPort: 2587
    exposedPort: 587
    external: external
  }
  {
    targetPort: 2465
    exposedPort: 465
    external: external
  }
]

var gatewayEnv = [
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
    name: 'SCANGW_SMTP_REQUIRE_TLS_AUTH'
    value: authPolicy
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
] : [
  {
    name: 'SCANGW_SMTP_TLS_SELF_SIGNED'
    value: selfSigned
  }
]

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

// The gateway's container: its own command, listeners, settings, certificate and a liveness probe on 2525.
var gatewayContainer = {
  name: 'smtp'
  image: image
  command: [
    'python'
    '-m'
    'gateway'
    'smtp'
  ]
  args: listenArgs
  env: concat(gatewayEnv, proxyEnv, tlsEnv)
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

// The placeholder as it is: no command, arguments, probes, mounts or settings meant for the gateway.
var placeholderContainer = {
  name: 'smtp'
  image: placeholderImage
  resources: {
    cpu: json('0.5')
    memory: '1Gi'
  }
}

module app 'br/public:avm/res/app/container-app:0.18.1' = {
  name: 'smtp-app'
  params: {
    name: name
    location: location
    tags: union(tags, {
      'azd-service-name': 'smtp'
    })
    environmentResourceId: environmentResourceId
    workloadProfileName: 'Consumption'
    managedIdentities: {
      userAssignedResourceIds: [
        identityResourceId
      ]
    }
    registries: isPlaceholder ? [] : [
      {
        server: registryServer
        identity: identityResourceId
      }
    ]
    activeRevisionsMode: 'Single'
    ingressExternal: external
    ingressTransport: 'tcp'
    ingressTargetPort: isPlaceholder ? placeholderPort : 2525
    exposedPort: 25
    additionalPortMappings: isPlaceholder ? [] : portMappings
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
    secrets: isPlaceholder ? [] : tlsSecrets
    volumes: isPlaceholder ? [] : tlsVolumes
    containers: [
      isPlaceholder ? placeholderContainer : gatewayContainer
    ]
  }
}

output name string = app.outputs.name
output fqdn string = app.outputs.fqdn
