#!/usr/bin/env bash
# Scope the delivery identity's mail rights to the sender mailboxes (Exchange RBAC for Applications).
#
# Exchange Online is administered with PowerShell only. With PowerShell 7 (pwsh) installed this runs
# grant-mailbox-access.ps1; without it, it prints the same steps, filled in, to paste into Azure Cloud Shell
# (PowerShell mode) or any machine with the ExchangeOnlineManagement module.
#
# Usage: infra/scripts/grant-mailbox-access.sh MAILBOX [MAILBOX...]
#   CLIENT_ID / OBJECT_ID default to the azd outputs DELIVERY_IDENTITY_CLIENT_ID / DELIVERY_IDENTITY_PRINCIPAL_ID.
set -euo pipefail

if [ "$#" -lt 1 ]; then
  echo "usage: $0 MAILBOX [MAILBOX...]   (the shared mailboxes the gateway sends from)" >&2
  exit 2
fi

azd_value() { command -v azd >/dev/null 2>&1 && azd env get-value "$1" 2>/dev/null || true; }
CLIENT_ID="${CLIENT_ID:-${DELIVERY_IDENTITY_CLIENT_ID:-$(azd_value DELIVERY_IDENTITY_CLIENT_ID)}}"
OBJECT_ID="${OBJECT_ID:-${DELIVERY_IDENTITY_PRINCIPAL_ID:-$(azd_value DELIVERY_IDENTITY_PRINCIPAL_ID)}}"
NAME="${NAME:-scangw}"
if [ -z "$CLIENT_ID" ] || [ -z "$OBJECT_ID" ]; then
  echo "CLIENT_ID and OBJECT_ID unknown: run after 'azd up' in the project folder, or set them" \
       "(azd outputs DELIVERY_IDENTITY_CLIENT_ID and DELIVERY_IDENTITY_PRINCIPAL_ID)." >&2
  exit 2
fi

here="$(cd "$(dirname "$0")" && pwd)"
if command -v pwsh >/dev/null 2>&1; then
  exec pwsh -NoProfile -File "$here/grant-mailbox-access.ps1" \
    -ClientId "$CLIENT_ID" -ObjectId "$OBJECT_ID" -Mailbox "$(IFS=,; echo "$*")" -Name "$NAME"
fi

filter=""
mailboxes=""
for m in "$@"; do
  [ -n "$filter" ] && filter="$filter -or " && mailboxes="$mailboxes,"
  filter="${filter}PrimarySmtpAddress -eq '${m//\'/\'\'}'"
  mailboxes="${mailboxes}'${m//\'/\'\'}'"
done

cat <<EOF
# pwsh not found. Easiest: in Azure Cloud Shell (PowerShell), upload infra/scripts/grant-mailbox-access.ps1 and run
#   ./grant-mailbox-access.ps1 -ClientId $CLIENT_ID -ObjectId $OBJECT_ID -Mailbox $mailboxes -Name $NAME
# It does everything below, is safe to re-run and prints what it changed. By hand, with the
# ExchangeOnlineManagement module (use each mailbox's primary SMTP address; the scope filters on it):
Connect-ExchangeOnline
# 1. After 'azd down' / 'azd up' the identity is new: assignments and service principals made for the old one keep
#    their names but grant the new one nothing. Remove them (nothing is removed while they are current):
foreach (\$n in "$NAME-mail-send", "$NAME-mail-readwrite") { \$a = Get-ManagementRoleAssignment -Identity \$n -ErrorAction SilentlyContinue; if (\$a) { \$sp = Get-ServicePrincipal -Identity ([string] \$a.RoleAssignee) -ErrorAction SilentlyContinue; if (-not \$sp -or \$sp.AppId -ne '$CLIENT_ID' -or \$sp.ObjectId -ne '$OBJECT_ID') { Remove-ManagementRoleAssignment -Identity \$n -Confirm:\$false; "Removed stale \$n" } } }
Get-ServicePrincipal | Where-Object { (\$_.DisplayName -eq '$NAME-delivery' -or \$_.AppId -eq '$CLIENT_ID') -and (\$_.AppId -ne '$CLIENT_ID' -or \$_.ObjectId -ne '$OBJECT_ID') } | ForEach-Object { Remove-ServicePrincipal -Identity ([string] \$_.ObjectId) -Confirm:\$false; "Removed stale service principal of app \$(\$_.AppId)" }
# 2. Register the identity, scope the mailboxes, assign both roles (skip a line whose object already exists):
New-ServicePrincipal -AppId $CLIENT_ID -ObjectId $OBJECT_ID -DisplayName "$NAME-delivery"
New-ManagementScope -Name "$NAME-senders" -RecipientRestrictionFilter "$filter"
New-ManagementRoleAssignment -Name "$NAME-mail-send" -Role "Application Mail.Send" -App $CLIENT_ID -CustomResourceScope "$NAME-senders"
New-ManagementRoleAssignment -Name "$NAME-mail-readwrite" -Role "Application Mail.ReadWrite" -App $CLIENT_ID -CustomResourceScope "$NAME-senders"
# 3. Check, mailbox by mailbox:
EOF
for m in "$@"; do
  echo "Test-ServicePrincipalAuthorization -Identity $CLIENT_ID -Resource '${m//\'/\'\'}' | Format-Table RoleName, GrantedPermissions, AllowedResourceScope, ScopeType, InScope"
done
cat <<EOF
# Already ran them once? Use Set-ManagementScope -Identity "$NAME-senders" -RecipientRestrictionFilter "..." to change the list.
# Exchange caches permissions: allow up to a couple of hours, then: scangw doctor --send-test you@example.com
EOF
