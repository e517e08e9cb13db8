<#
.SYNOPSIS
    Lets the scangw delivery identity send from, and only from, the given shared mailboxes.

.DESCRIPTION
    Exchange Online RBAC for Applications, least privilege: the delivery identity (the Function app's
    user-assigned managed identity) gets the roles "Application Mail.Send" and "Application Mail.ReadWrite",
    each limited by a management scope to the sender mailboxes. Mail.ReadWrite is needed because the gateway
    builds each message as a draft and adds large attachments through upload sessions before sending it.

    Safe to run again: every object is looked up first and created only when missing, or updated when it differs
    (run it again with the full list whenever you add or remove a sender mailbox).

    Also after `azd down` / `azd up`, which re-creates the identity with a new client id: the role assignments
    keep their names and scope but still name the old service principal, so they grant the new identity nothing.
    The script compares each assignment's assignee (AppId and ObjectId of its service principal) with -ClientId
    and -ObjectId, replaces the stale assignments and removes the stale service principals, and prints what it
    changed.

    Do NOT also grant the identity the Entra (Graph) application permission Mail.Send or Mail.ReadWrite: those
    are tenant-wide and add to the RBAC grants, so the scope below would no longer limit anything. That is what
    the opt-in grantTenantWideMailSend Bicep parameter does, for trials only.

    Needs the ExchangeOnlineManagement module and an account in the Organization Management role group (or
    Exchange Administrator / Global Administrator in Entra).

.PARAMETER ClientId
    Client (application) id of the delivery identity: azd output DELIVERY_IDENTITY_CLIENT_ID.

.PARAMETER ObjectId
    Object id of the delivery identity's service principal (enterprise application):
    azd output DELIVERY_IDENTITY_PRINCIPAL_ID.

.PARAMETER Mailbox
    One or more sender mailboxes (shared mailbox UPNs or addresses): SCANGW_SENDER and every device --sender.

.PARAMETER Name
    Prefix for the Exchange objects this script owns (service principal display name, scope, assignments).

.EXAMPLE
    ./grant-mailbox-access.ps1 -ClientId $env:DELIVERY_IDENTITY_CLIENT_ID -ObjectId $env:DELIVERY_IDENTITY_PRINCIPAL_ID `
        -Mailbox scanner@contoso.com, scans-hr@contoso.com
#>
[CmdletBinding(SupportsShouldProcess = $true)]
param(
    [Parameter(Mandatory = $true)]
    [ValidatePattern('^[0-9a-fA-F-]{36}$')]
    [string] $ClientId,

    [Parameter(Mandatory = $true)]
    [ValidatePattern('^[0-9a-fA-F-]{36}$')]
    [string] $ObjectId,

    [Parameter(Mandatory = $true)]
    [ValidateNotNullOrEmpty()]
    [string[]] $Mailbox,

    [ValidatePattern('^[A-Za-z0-9-]{1,40}$')]
    [string] $Name = 'scangw'
)

# No Set-StrictMode: Exchange cmdlets return deserialized objects whose optional properties may be absent.
$ErrorActionPreference = 'Stop'

$scopeName = "$Name-senders"
# Role -> name of our assignment. Both are needed: drafts and upload sessions (ReadWrite), then send (Send).
$roles = [ordered]@{
    'Application Mail.Send'      = "$Name-mail-send"
    'Application Mail.ReadWrite' = "$Name-mail-readwrite"
}

# --- 0. Connect (reuse an existing Exchange Online session) -----------------------------------------------
if (-not (Get-Module -ListAvailable -Name ExchangeOnlineManagement)) {
    throw 'The ExchangeOnlineManagement module is missing: Install-Module ExchangeOnlineManagement -Scope CurrentUser'
}
Import-Module ExchangeOnlineManagement
if (-not (Get-ConnectionInformation -ErrorAction SilentlyContinue)) {
    Connect-ExchangeOnline -ShowBanner:$false
}

# `pwsh -File` (as grant-mailbox-access.sh calls it) passes a list as one comma-separated string.
$Mailbox = @($Mailbox | ForEach-Object { $_ -split '[,;\s]+' } | Where-Object { $_ })

# --- 1. Resolve the mailboxes: the scope filters on the primary SMTP address, which need not equal the UPN ----
$addresses = foreach ($m in $Mailbox) {
    $box = Get-EXOMailbox -Identity $m -Properties RecipientTypeDetails -ErrorAction SilentlyContinue
    if (-not $box) {
        throw "No mailbox '$m' in Exchange Online. Create the shared mailbox first (New-Mailbox -Shared)."
    }
    if ($box.RecipientTypeDetails -ne 'SharedMailbox') {
        Write-Warning "$m is a $($box.RecipientTypeDetails), not a shared mailbox. It works, but a shared mailbox needs no licence and no password."
    }
    [string] $box.PrimarySmtpAddress
}
$addresses = @($addresses | Sort-Object -Unique)

# Everything this run changes, printed at the end (and nothing else is touched).
$changes = [System.Collections.Generic.List[string]]::new()
$displayName = "$Name-delivery"

function Test-OurPrincipal($principal) {
    # The same identity means the same app id AND the same object id: a re-created identity has new ones.
    return $principal -and ([string] $principal.AppId) -eq $ClientId -and ([string] $principal.ObjectId) -eq $ObjectId
}

function Get-Assignee($assignment) {
    # The Exchange service principal a role assignment names. RoleAssignee is the assignee's identity;
    # RoleAssigneeName its name (property names from Get-ManagementRoleAssignment output; UNVERIFIED here).
    # Not resolvable (deleted, or named differently): treated as stale, so the assignment is re-created for us.
    foreach ($id in @([string] $assignment.RoleAssignee, [string] $assignment.RoleAssigneeName)) {
        if ($id) {
            $principal = Get-ServicePrincipal -Identity $id -ErrorAction SilentlyContinue
            if ($principal) { return $principal }
        }
    }
    return $null
}

function Format-Principal($principal) {
    if (-not $principal) { return 'a service principal Exchange no longer knows' }
    return "app $($principal.AppId) (object $($principal.ObjectId))"
}

# --- 2. Clear out what a deleted identity left behind ----------------------------------------------------------
# Our assignments by name, assigned to anyone but this identity: stale (or never ours). They are re-created below.
foreach ($assignmentName in $roles.Values) {
    $assignment = Get-ManagementRoleAssignment -Identity $assignmentName -ErrorAction SilentlyContinue
    if (-not $assignment) { continue }
    $assignee = Get-Assignee $assignment
    if (Test-OurPrincipal $assignee) { continue }
    if ($PSCmdlet.ShouldProcess($assignmentName, "Remove-ManagementRoleAssignment (assigned to $(Format-Principal $assignee))")) {
        Remove-ManagementRoleAssignment -Identity $assignmentName -Confirm:$false
        $changes.Add("Removed role assignment ${assignmentName}: it was assigned to $(Format-Principal $assignee), not app $ClientId (object $ObjectId).")
    }
}
# Service principals this script registered for earlier identities (same display name or same app id, other ids).
$stale = @(Get-ServicePrincipal -ErrorAction SilentlyContinue | Where-Object {
        ($_.DisplayName -eq $displayName -or ([string] $_.AppId) -eq $ClientId) -and -not (Test-OurPrincipal $_)
    })
foreach ($old in $stale) {
    if ($PSCmdlet.ShouldProcess("$($old.DisplayName) ($(Format-Principal $old))", 'Remove-ServicePrincipal')) {
        Remove-ServicePrincipal -Identity ([string] $old.ObjectId) -Confirm:$false
        $changes.Add("Removed stale service principal $($old.DisplayName): $(Format-Principal $old).")
    }
}

# --- 3. Exchange's pointer to the Entra service principal ------------------------------------------------------
# RBAC for Applications assigns roles to this Exchange object, not to the Entra app directly.
$sp = Get-ServicePrincipal -Identity $ClientId -ErrorAction SilentlyContinue
if (-not (Test-OurPrincipal $sp)) {
    if ($PSCmdlet.ShouldProcess($ClientId, 'New-ServicePrincipal')) {
        $sp = New-ServicePrincipal -AppId $ClientId -ObjectId $ObjectId -DisplayName $displayName
        $changes.Add("Registered service principal $displayName for app $ClientId (object $ObjectId).")
    }
}
else {
    Write-Host "Service principal for app $ClientId (object $ObjectId) exists."
}

# --- 4. The management scope: exactly these mailboxes ----------------------------------------------------------
# OPATH filter; a single quote inside an address is doubled.
$filter = ($addresses | ForEach-Object { "PrimarySmtpAddress -eq '$($_ -replace "'", "''")'" }) -join ' -or '
$scope = Get-ManagementScope -Identity $scopeName -ErrorAction SilentlyContinue
if (-not $scope) {
    if ($PSCmdlet.ShouldProcess($scopeName, "New-ManagementScope ($filter)")) {
        New-ManagementScope -Name $scopeName -RecipientRestrictionFilter $filter | Out-Null
        $changes.Add("Created management scope $scopeName ($filter).")
    }
}
elseif ($scope.RecipientFilter -ne $filter) {
    # Exchange may normalise the stored filter text, so this can also re-set an unchanged list: harmless.
    if ($PSCmdlet.ShouldProcess($scopeName, "Set-ManagementScope ($filter)")) {
        Set-ManagementScope -Identity $scopeName -RecipientRestrictionFilter $filter
        $changes.Add("Set management scope $scopeName to $filter.")
    }
}
else {
    Write-Host "Management scope $scopeName is up to date."
}

# --- 5. One role assignment per role, limited to the scope (stale ones were removed in step 2) -----------------------------------------------------
foreach ($role in $roles.Keys) {
    $assignmentName = $roles[$role]
    $assignment = Get-ManagementRoleAssignment -Identity $assignmentName -ErrorAction SilentlyContinue
    if (-not $assignment) {
        if ($PSCmdlet.ShouldProcess($assignmentName, "New-ManagementRoleAssignment $role")) {
            New-ManagementRoleAssignment -Name $assignmentName -Role $role -App $ClientId -CustomResourceScope $scopeName | Out-Null
            $changes.Add("Assigned '$role' to app $ClientId as $assignmentName, scope $scopeName.")
        }
    }
    elseif ($assignment.CustomResourceScope -ne $scopeName) {
        if ($PSCmdlet.ShouldProcess($assignmentName, "Set-ManagementRoleAssignment -CustomResourceScope $scopeName")) {
            Set-ManagementRoleAssignment -Identity $assignmentName -CustomResourceScope $scopeName
            $changes.Add("Re-scoped $assignmentName to $scopeName.")
        }
    }
    else {
        Write-Host "Role assignment $assignmentName exists for app $ClientId."
    }
}

Write-Host ''
if ($changes.Count -eq 0) {
    Write-Host 'Nothing changed: the service principal, scope and both role assignments were already in place.'
}
else {
    Write-Host 'Changed:'
    $changes | ForEach-Object { Write-Host "  - $_" }
}

# --- 6. Check what Exchange now grants, mailbox by mailbox -----------------------------------------------------
$failed = $false
foreach ($address in $addresses) {
    $results = @(Test-ServicePrincipalAuthorization -Identity $ClientId -Resource $address)
    $results | Format-Table RoleName, GrantedPermissions, AllowedResourceScope, ScopeType, InScope -AutoSize | Out-Host
    foreach ($role in $roles.Keys) {
        $hit = $results | Where-Object { $_.RoleName -eq $role -and $_.InScope }
        if (-not $hit) {
            Write-Warning "$address is not yet in scope for '$role'."
            $failed = $true
        }
    }
}

Write-Host ''
if ($failed -and $changes.Count -eq 0) {
    Write-Host 'Nothing was changed this run and Exchange still reports a mailbox out of scope: check the mailbox list and -ClientId/-ObjectId (azd env get-value DELIVERY_IDENTITY_CLIENT_ID / DELIVERY_IDENTITY_PRINCIPAL_ID).'
}
Write-Host 'Exchange caches permissions: a new grant can take a while to reach Microsoft Graph (allow up to a couple of hours).'
Write-Host 'Then check from the gateway side:  scangw doctor --send-test you@example.com'
Write-Host 'Make sure the identity holds NO tenant-wide Graph mail permission, or the scope above limits nothing:'
Write-Host "  az rest --method get --uri https://graph.microsoft.com/v1.0/servicePrincipals/$ObjectId/appRoleAssignments --query 'value[].appRoleId'"
Write-Host '  (b633e1c5-b582-4048-a93e-9f11b44c7e96 = Mail.Send, e2a3a72e-5f79-4c64-b1b1-878b674786c9 = Mail.ReadWrite must not be listed)'
if ($failed -and -not $WhatIfPreference) {
    exit 1
}
