// Which image the SMTP app should run after this deployment. On the first `azd up` the app does not exist yet
// and azd pushes the real image only after provisioning, so smtp.bicep starts from a placeholder. Afterwards azd
// sets SERVICE_SMTP_RESOURCE_EXISTS=true and a re-provision keeps the image azd deployed instead of rolling the
// app back to the placeholder.

param name string
param exists bool

resource existingApp 'Microsoft.App/containerApps@2024-03-01' existing = if (exists) {
  name: name
}

output image string = exists ? existingApp.properties.template.containers[0].image : ''
