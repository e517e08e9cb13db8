// The SMTP container app, deployed by `azd deploy` (and the deploy step of `azd up`) right after azd has built and
// pushed the image. azd runs infra/<service>.bicep with infra/<service>.parameters.json for a container app service
// when both exist ("controlled revisions", azd 1.20 and later), substituting the azd environment: the image it just
// pushed (SERVICE_SMTP_IMAGE_NAME) and the outputs of main.bicep. So:
//   - the first revision runs the real image with its real command, ports and probe: no placeholder to crash-loop;
//   - `azd provision` never references the container app, so an azd release that reports
//     SERVICE_SMTP_RESOURCE_EXISTS=true on a first deployment (Azure/azure-dev issue 5931) changes nothing;
//   - re-provisioning cannot roll the app back to an older image.
// main.bicep decides every value (including the refusal of plaintext AUTH from anywhere); this file only passes
// them on. Values arrive as strings from the azd environment, hence bool() and split() below.

@description('Container app name (main.bicep output SMTP_APP_NAME).')
param name string

@description('azd environment name, for the azd-env-name tag.')
param environmentName string

param location string = resourceGroup().location

@description('The image azd just pushed (SERVICE_SMTP_IMAGE_NAME). Empty: the placeholder, started as it is.')
param image string = ''

param environmentResourceId string
param registryServer string
param identityResourceId string
param identityClientId string
param blobServiceUri string
param queueServiceUri string
param tableServiceUri string
param senderMailbox string
param appInsightsName string

@description('"true": the admin\'s certificate from Key Vault; otherwise the door\'s self-signed one.')
param tlsEnabled string = 'false'
param keyVaultUri string = ''

@description('"true": the SMTP ports face the internet (custom VNet).')
param external string = 'true'

param proxyCidrs string = ''

@description('Comma-separated public CIDRs allowed to connect. Empty: any address.')
param allowedCidrs string = ''

@description('Comma-separated host names for the self-signed certificate.')
param hostNames string = ''

@description('"true": AUTH accepted before TLS (main.bicep allows it only with allowedCidrs).')
param allowPlaintextAuth string = 'false'

var cidrs = filter(split(allowedCidrs, ','), cidr => !empty(trim(cidr)))

module smtp 'app/smtp.bicep' = {
  name: 'smtp'
  params: {
    name: name
    location: location
    tags: {
      'azd-env-name': environmentName
    }
    environmentResourceId: environmentResourceId
    image: image
    registryServer: registryServer
    external: bool(external)
    proxyCidrs: proxyCidrs
    allowedCidrs: cidrs
    identityResourceId: identityResourceId
    identityClientId: identityClientId
    blobServiceUri: blobServiceUri
    queueServiceUri: queueServiceUri
    tableServiceUri: tableServiceUri
    senderMailbox: senderMailbox
    appInsightsName: appInsightsName
    tlsEnabled: bool(tlsEnabled)
    keyVaultUri: keyVaultUri
    selfSignedHosts: hostNames
    allowPlaintextAuth: bool(allowPlaintextAuth)
  }
}

output SMTP_APP_FQDN string = smtp.outputs.fqdn
