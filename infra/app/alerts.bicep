// Alerts to the admin (SCANGW_ADMIN_EMAIL) for what no failure notice covers: queue messages set aside as
// poison (no job to write to), and deliveries retrying en masse (Graph, Exchange or storage refusing for a
// while). Each query matches a log line the gateway writes; tests/infra checks the two stay in step.

param actionGroupName string
param alertNamePrefix string
param appInsightsResourceId string
param adminEmail string
param location string = resourceGroup().location
param tags object = {}

@description('Retries within an hour above which the retry alert fires (a burst paced at 30 a minute stays under it).')
param retryAlertThreshold int = 60

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

module poisonAlert 'br/public:avm/res/insights/scheduled-query-rule:0.6.0' = {
  name: 'alert-poison'
  params: {
    name: '${alertNamePrefix}-poison'
    location: location
    tags: tags
    alertDescription: 'A scan-jobs queue message could not be processed and was set aside (scan-jobs-poison). Check the trace, then the job with scangw jobs show.'
    scopes: [
      appInsightsResourceId
    ]
    severity: 1
    evaluationFrequency: 'PT15M'
    windowSize: 'PT15M'
    criterias: {
      allOf: [
        {
          query: 'traces | where message has "poison"'
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
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

module retryAlert 'br/public:avm/res/insights/scheduled-query-rule:0.6.0' = {
  name: 'alert-retries'
  params: {
    name: '${alertNamePrefix}-retries'
    location: location
    tags: tags
    alertDescription: 'Many deliveries are being retried: Graph, Exchange or storage keeps refusing. scangw jobs list --state queued shows each job\'s last error; scangw doctor checks identity, permission and mailbox.'
    scopes: [
      appInsightsResourceId
    ]
    severity: 2
    evaluationFrequency: 'PT15M'
    windowSize: 'PT1H'
    criterias: {
      allOf: [
        {
          query: 'traces | where message has "state=queued retry_in"'
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: retryAlertThreshold
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
