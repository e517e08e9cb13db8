// Alerts to the admin (SCANGW_ADMIN_EMAIL), each on a metric or a structured log field the gateway writes,
// never on free text (attacker text reaches log lines escaped, but it does reach them). The queries live in
// kql/*.kql, loaded here and by tests/infra/test_monitoring.py, so a renamed metric or field breaks a test.

param actionGroupName string
param alertNamePrefix string
param appInsightsResourceId string
param adminEmail string
param location string = resourceGroup().location
param tags object = {}

@description('Retries within an hour above which the retry alert fires (a burst paced at 30 a minute stays under it).')
param retryAlertThreshold int = 60

@description('Failed scans within 15 minutes above which the failed-scan alert fires (0: every failure).')
param failedScanThreshold int = 0

@description('Minutes the oldest unfinished job may wait before the stuck-queue alert fires.')
param stuckQueueMinutes int = 30

@description('Refused logins at one door within 15 minutes above which the guessing alert fires.')
param loginBurstThreshold int = 20

@description('Days before the SMTP door\'s TLS certificate expires at which its alert fires.')
param certificateDaysLeft int = 21

@description('Opt-in, for sites that scan every day: alert when no device sent a scan for 3 days.')
param noScanAlertEnabled bool = false

module actionGroup 'br/public:avm/res/insights/action-group:0.8.0' = {
  name: 'action-group'
  params: {
    name: actionGroupName
    groupShortName: 'scangw'
    location: 'global'
    tags: tags
    emailReceivers: [
      {
        name: 'admin'
        emailAddress: adminEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

var alwaysOn = [
  {
    key: 'failed'
    description: 'Scans ended failed; each sent a notice with the reason. The workbook lists failures by reason with the remedy; scangw jobs list --state failed shows each job.'
    severity: 2
    frequency: 'PT15M'
    window: 'PT15M'
    queryTimeRange: ''
    query: loadTextContent('kql/alert-failed-scans.kql')
    aggregation: 'Total'
    measure: 'failures'
    operator: 'GreaterThan'
    threshold: failedScanThreshold
  }
  {
    key: 'poison'
    description: 'A scan-jobs queue message could not be processed and was set aside (scan-jobs-poison). Check the trace, then the job with scangw jobs show.'
    severity: 1
    frequency: 'PT15M'
    window: 'PT15M'
    queryTimeRange: ''
    query: loadTextContent('kql/alert-poison.kql')
    aggregation: 'Count'
    measure: ''
    operator: 'GreaterThan'
    threshold: 0
  }
  {
    key: 'retries'
    description: 'Many deliveries are being retried: Graph, Exchange or storage keeps refusing. scangw jobs list --state queued shows each job\'s last error; scangw doctor checks identity, permission and mailbox.'
    severity: 2
    frequency: 'PT15M'
    window: 'PT1H'
    queryTimeRange: ''
    query: loadTextContent('kql/alert-retries.kql')
    aggregation: 'Count'
    measure: ''
    operator: 'GreaterThan'
    threshold: retryAlertThreshold
  }
  {
    key: 'stuck'
    description: 'The oldest unfinished job has waited over ${stuckQueueMinutes} minutes: delivery is stuck. scangw status shows the queue and each mailbox\'s budget; scangw doctor checks identity and permission.'
    severity: 1
    frequency: 'PT5M'
    window: 'PT15M'
    queryTimeRange: ''
    query: loadTextContent('kql/alert-stuck-queue.kql')
    aggregation: 'Maximum'
    measure: 'oldest_minutes'
    operator: 'GreaterThan'
    threshold: stuckQueueMinutes
  }
  {
    key: 'logins'
    description: 'Many refused logins at one door: someone is guessing passwords, or a device kept an old password (scangw devices rotate NAME).'
    severity: 2
    frequency: 'PT15M'
    window: 'PT15M'
    queryTimeRange: ''
    query: loadTextContent('kql/alert-login-burst.kql')
    aggregation: 'Total'
    measure: 'refused'
    operator: 'GreaterThan'
    threshold: loginBurstThreshold
  }
  {
    key: 'certificate'
    description: 'The SMTP door\'s TLS certificate expires within ${certificateDaysLeft} days: renew it in Key Vault (smtp-tls-cert, smtp-tls-key); the door reloads it without dropping sessions.'
    severity: 2
    frequency: 'PT6H'
    window: 'PT6H'
    queryTimeRange: ''
    query: loadTextContent('kql/alert-cert-expiry.kql')
    aggregation: 'Minimum'
    measure: 'days_left'
    operator: 'LessThan'
    threshold: certificateDaysLeft
  }
]

// Opt-in: a site where devices may rest for days would be woken by it for nothing.
var noScanRule = {
  key: 'noscans'
  description: 'No device sent a scan for 3 days: check the scanners, their passwords (refused logins) and the doors.'
  severity: 3
  frequency: 'PT6H'
  window: 'P1D'
  queryTimeRange: 'P3D'
  query: loadTextContent('kql/alert-no-scans.kql')
  aggregation: 'Total'
  measure: 'scans'
  operator: 'LessThan'
  threshold: 1
}

var optIn = [
  noScanRule
]
var rules = noScanAlertEnabled ? concat(alwaysOn, optIn) : alwaysOn

module alert 'br/public:avm/res/insights/scheduled-query-rule:0.6.0' = [
  for rule in rules: {
    name: 'alert-${rule.key}'
    params: {
      name: '${alertNamePrefix}-${rule.key}'
      location: location
      tags: tags
      alertDescription: rule.description
      scopes: [
        appInsightsResourceId
      ]
      severity: rule.severity
      evaluationFrequency: rule.frequency
      windowSize: rule.window
      queryTimeRange: rule.queryTimeRange
      criterias: {
        allOf: [
          {
            query: rule.query
            timeAggregation: rule.aggregation
            metricMeasureColumn: empty(rule.measure) ? null : rule.measure
            operator: rule.operator
            threshold: rule.threshold
            failingPeriods: {
              numberOfEvaluationPeriods: 1
              minFailingPeriodsToAlert: 1
            }
          }
        ]
      }
      actions: {
        actionGroupResourceIds: [
          actionGroup.outputs.resourceId
        ]
      }
    }
  }
]
