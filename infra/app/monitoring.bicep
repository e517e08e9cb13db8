// Logs and telemetry: one Log Analytics workspace, one workspace-based Application Insights resource that accepts
// only Entra-authenticated ingestion (no instrumentation-key ingestion), so its connection string grants nothing.

param logAnalyticsName string
param appInsightsName string
param location string = resourceGroup().location
param tags object = {}

@description('Days the workspace keeps logs, Application Insights telemetry included (a workspace-based component keeps its data in the workspace, so this is the one retention setting). The first 31 days are included in the price.')
@minValue(30)
@maxValue(730)
param retentionDays int = 30

module logAnalytics 'br/public:avm/res/operational-insights/workspace:0.7.0' = {
  name: 'log-analytics'
  params: {
    name: logAnalyticsName
    location: location
    tags: tags
    dataRetention: retentionDays
  }
}

module appInsights 'br/public:avm/res/insights/component:0.4.1' = {
  name: 'app-insights'
  params: {
    name: appInsightsName
    location: location
    tags: tags
    workspaceResourceId: logAnalytics.outputs.resourceId
    applicationType: 'web'
    disableLocalAuth: true
    // Client addresses stay masked in telemetry; the SMTP door logs the peer address itself where it matters.
    disableIpMasking: false
    // No retentionInDays: a workspace-based component stores its data in the workspace above, whose dataRetention
    // governs; the component's own setting has no effect there.
  }
}

output appInsightsName string = appInsights.outputs.name
output appInsightsResourceId string = appInsights.outputs.resourceId
output logAnalyticsWorkspaceResourceId string = logAnalytics.outputs.resourceId
