//! The [`ObjectStore`] conformance suite against [`S3Client`] on the s3s test server
//! (atomic conditional writes, see `support/conditional.rs`): the same checks the unit
//! tests run against `MemoryStore`, so the in-memory store cannot drift from a real
//! server.

use crate::support::s3_server;

use s3_server::TestS3Server;
use synapse_backup::testing::store_conformance as conformance;
use synapse_backup::{ObjectStore, S3Client, S3Parameters};

const BUCKET: &str = "synapse-backups";

async fn client(server: &TestS3Server, path: &str) -> S3Client {
    let mut data = server.relation_data(BUCKET);
    data.insert("path".into(), path.into());
    S3Client::new(&S3Parameters::from_relation_data(&data).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_client_passes_the_store_conformance_suite() {
    let server = TestS3Server::start().await;
    server.create_bucket(BUCKET);
    let client = client(&server, "/synapse//backups/").await;
    assert_eq!(ObjectStore::prefix(&client), "synapse/backups");
    conformance::run(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_client_passes_at_the_bucket_root_and_as_a_trait_object() {
    let server = TestS3Server::start().await;
    server.create_bucket(BUCKET);
    let client = client(&server, "").await;
    let store: std::sync::Arc<dyn ObjectStore> = std::sync::Arc::new(client);
    conformance::run(&*store).await;
}

/// The same suite on moto, a second S3 server of another make (its own request
/// parsing, checksums and conditional writes), so that no check passes only because of
/// how s3s answers: among them `put_object_file`'s single PUT with its Content-MD5.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_client_passes_the_store_conformance_suite_on_moto() {
    let server = tokio::task::spawn_blocking(|| {
        let server = s3_server::MotoServer::start();
        server.create_bucket(BUCKET);
        server
    })
    .await
    .unwrap();
    let mut data = server.relation_data(BUCKET);
    data.insert("path".into(), "on-moto/backups".into());
    let client = S3Client::new(&S3Parameters::from_relation_data(&data).unwrap()).unwrap();
    conformance::run(&client).await;
}
