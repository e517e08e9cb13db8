"""scangw: a scan-to-email gateway that relays scanner mail to Microsoft Graph with a managed identity."""

__version__ = "0.1.0"
