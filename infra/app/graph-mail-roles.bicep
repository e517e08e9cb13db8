// OPT-IN TRIAL MODE ONLY (main.bicep deploys this module only when grantTenantWideMailSend is true).
//
// Grants the delivery identity the Microsoft Graph application roles Mail.Send and Mail.ReadWrite. These are
// tenant-wide: the identity could then send as, and read, EVERY mailbox in the organisation. Exchange RBAC for
// Applications cannot narrow them afterwards, because Entra grants add to RBAC grants. For anything beyond a
// trial, leave this off and run scripts/grant-mailbox-access.ps1, which scopes the same rights to the sender
// mailboxes. The deployer needs rights to grant app roles (e.g. Privileged Role Administrator); the assignment
// itself is the admin consent.
extension microsoftGraphV1

@description('Object id of the delivery identity\'s service principal.')
param principalId string

var graphAppId = '00000003-0000-0000-c000-000000000000' // Microsoft Graph, the same in every tenant
var mailSendRoleId = 'b633e1c5-b582-4048-a93e-9f11b44c7e96' // Mail.Send (application)
var mailReadWriteRoleId = 'e2a3a72e-5f79-4c64-b1b1-878b674786c9' // Mail.ReadWrite (application): drafts, attachments, upload sessions

resource graph 'Microsoft.Graph/servicePrincipals@v1.0' existing = {
  appId: graphAppId
}

resource mailSend 'Microsoft.Graph/appRoleAssignedTo@v1.0' = {
  appRoleId: mailSendRoleId
  principalId: principalId
  resourceId: graph.id
}

resource mailReadWrite 'Microsoft.Graph/appRoleAssignedTo@v1.0' = {
  appRoleId: mailReadWriteRoleId
  principalId: principalId
  resourceId: graph.id
}
