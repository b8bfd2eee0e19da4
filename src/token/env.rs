//! Environment variables of the Azure SDK conventions that the Entra credentials
//! ([`super::azure`], behind the `azure` cargo feature) read. They live outside that module so
//! that code compiled without the feature (the doctor's remedies) can name them.

/// Entra tenant id.
pub const TENANT_ID: &str = "AZURE_TENANT_ID";
/// Application (client) id.
pub const CLIENT_ID: &str = "AZURE_CLIENT_ID";
/// Client secret of a service principal.
pub const CLIENT_SECRET: &str = "AZURE_CLIENT_SECRET";
/// PEM certificate (with key) of a service principal.
pub const CLIENT_CERTIFICATE_PATH: &str = "AZURE_CLIENT_CERTIFICATE_PATH";
/// Kubernetes service-account token for workload identity (it rotates).
pub const FEDERATED_TOKEN_FILE: &str = "AZURE_FEDERATED_TOKEN_FILE";
/// Authority host for sovereign clouds.
pub const AUTHORITY_HOST: &str = "AZURE_AUTHORITY_HOST";
/// App Service / Container Apps managed identity endpoint.
pub const IDENTITY_ENDPOINT: &str = "IDENTITY_ENDPOINT";
