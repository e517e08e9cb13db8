// The admin's Azure Monitor workbook, deployed with the app: what each device sends, what is delivered or
// failed (and why, with the remedy), how long delivery takes, Exchange throttling, the queue, silent devices
// and refused logins. Every figure is a metric of contract section 9; the queries live in kql/*.kql, loaded
// here and by tests/infra/test_monitoring.py.

param name string
param appInsightsResourceId string
param location string = resourceGroup().location
param tags object = {}

@description('Devices with no scan for more than this many days are listed as silent (the admin can change it in the workbook).')
param silentDays int = 3

var charts = [
  {
    title: 'Scans per device per day'
    query: loadTextContent('kql/scans-per-device.kql')
    visualization: 'barchart'
    timeRange: 'P7D'
  }
  {
    title: 'Delivered vs failed per day'
    query: loadTextContent('kql/delivered-vs-failed.kql')
    visualization: 'barchart'
    timeRange: 'P7D'
  }
  {
    title: 'Failures by reason, with the remedy'
    query: loadTextContent('kql/failures-by-reason.kql')
    visualization: 'table'
    timeRange: 'P7D'
  }
  {
    title: 'Delivery latency p50 / p95 (seconds)'
    query: loadTextContent('kql/delivery-latency.kql')
    visualization: 'linechart'
    timeRange: 'P1D'
  }
  {
    title: 'Graph throttling per sender mailbox'
    query: loadTextContent('kql/throttling.kql')
    visualization: 'barchart'
    timeRange: 'P1D'
  }
  {
    title: 'Oldest queued job (minutes)'
    query: loadTextContent('kql/oldest-queued.kql')
    visualization: 'linechart'
    timeRange: 'P1D'
  }
  {
    title: 'Silent devices'
    query: loadTextContent('kql/silent-devices.kql')
    visualization: 'table'
    timeRange: 'P30D'
  }
  {
    title: 'Refused logins by door'
    query: loadTextContent('kql/refused-logins.kql')
    visualization: 'barchart'
    timeRange: 'P1D'
  }
]

var parameters = {
  type: 9
  content: {
    version: 'KqlParameterItem/1.0'
    parameters: [
      {
        id: 'silent-days'
        version: 'KqlParameterItem/1.0'
        name: 'SilentDays'
        label: 'Silent after (days)'
        type: 1
        value: string(silentDays)
        isRequired: true
      }
    ]
  }
  name: 'parameters'
}

var items = [
  for (chart, i) in charts: {
    type: 3
    content: {
      version: 'KqlItem/1.0'
      query: chart.query
      size: 0
      title: chart.title
      timeContext: {
        durationMs: chart.timeRange == 'P30D' ? 2592000000 : (chart.timeRange == 'P7D' ? 604800000 : 86400000)
      }
      queryType: 0
      resourceType: 'microsoft.insights/components'
      visualization: chart.visualization
    }
    name: 'chart-${i}'
  }
]

var workbook = {
  version: 'Notebook/1.0'
  items: concat(
    [
      {
        type: 1
        content: {
          json: '## scangw\nScans, deliveries, failures and the queue, from the gateway\'s own metrics. `scangw status` shows the same figures without Azure.'
        }
        name: 'intro'
      }
      parameters
    ],
    items
  )
  fallbackResourceIds: [
    appInsightsResourceId
  ]
}

resource scangwWorkbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(resourceGroup().id, name)
  location: location
  tags: union(tags, {
    'hidden-title': name
  })
  kind: 'shared'
  properties: {
    displayName: name
    category: 'workbook'
    sourceId: appInsightsResourceId
    serializedData: string(workbook)
  }
}

output workbookId string = scangwWorkbook.id
