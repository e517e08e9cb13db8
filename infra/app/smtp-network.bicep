// The SMTP environment's own virtual network. Container Apps accepts external TCP ingress (our ports 25, 587 and
// 465) only in an environment with a custom VNet. The subnet is delegated to Container Apps (workload profiles
// environment); its range is also where the TCP ingress proxies sit, hence SCANGW_SMTP_PROXY_CIDRS.

param name string
param location string = resourceGroup().location
param tags object = {}
param addressPrefix string = '10.60.0.0/16'

@description('At least /27 for a workload profiles environment; /23 leaves room for many replicas.')
param subnetAddressPrefix string = '10.60.0.0/23'

var subnetName = 'snet-smtp-environment'

module vnet 'br/public:avm/res/network/virtual-network:0.6.1' = {
  name: 'smtp-vnet'
  params: {
    name: name
    location: location
    tags: tags
    addressPrefixes: [
      addressPrefix
    ]
    subnets: [
      {
        name: subnetName
        addressPrefix: subnetAddressPrefix
        delegation: 'Microsoft.App/environments'
      }
    ]
  }
}

output subnetResourceId string = vnet.outputs.subnetResourceIds[0]
output subnetAddressPrefix string = subnetAddressPrefix
