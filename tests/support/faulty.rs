//! A fault injector: a `Container` that delegates to a real one and breaks one thing
//! on purpose (a real component with a fault, not a mock).
#![allow(dead_code)]

use std::sync::Mutex;

use async_trait::async_trait;
use synapse_backup::{
    Container, ContainerError, ExecOptions, ExecOutput, FileInfo, ListOptions, MakeDirOptions,
    PushOptions,
};
use tokio::sync::oneshot;

/// Delegates to `inner`; see the fields for the faults.
pub struct Faulty<C> {
    pub inner: C,
    /// Give the backup pipeline no passphrase on its standard input (gpg gets none).
    pub break_passphrase: bool,
    /// When the backup pipeline returns, send on the first channel and wait on the second.
    pub after_pipeline: Mutex<Option<(oneshot::Sender<()>, oneshot::Receiver<()>)>>,
}

impl<C> Faulty<C> {
    pub fn new(inner: C) -> Self {
        Faulty {
            inner,
            break_passphrase: false,
            after_pipeline: Mutex::new(None),
        }
    }

    /// Returns (pipeline finished, go on).
    pub fn pause_after_pipeline(&self) -> (oneshot::Receiver<()>, oneshot::Sender<()>) {
        let (done_tx, done_rx) = oneshot::channel();
        let (go_tx, go_rx) = oneshot::channel();
        *self.after_pipeline.lock().unwrap() = Some((done_tx, go_rx));
        (done_rx, go_tx)
    }
}

#[async_trait]
impl<C: Container> Container for Faulty<C> {
    async fn exec(
        &self,
        command: &[String],
        options: ExecOptions,
    ) -> Result<ExecOutput, ContainerError> {
        // The backup pipeline is the one call given an expected upload size.
        let is_pipeline = options.environment.contains_key("SB_EXPECTED_SIZE");
        let mut options = options;
        if is_pipeline && self.break_passphrase {
            options.stdin = None;
        }
        let result = self.inner.exec(command, options).await;
        if is_pipeline {
            let pause = self.after_pipeline.lock().unwrap().take();
            if let Some((done, go)) = pause {
                let _ = done.send(());
                let _ = go.await;
            }
        }
        result
    }
    async fn push(
        &self,
        path: &str,
        content: &[u8],
        options: PushOptions,
    ) -> Result<(), ContainerError> {
        self.inner.push(path, content, options).await
    }
    async fn pull(&self, path: &str) -> Result<Vec<u8>, ContainerError> {
        self.inner.pull(path).await
    }
    async fn list_files(
        &self,
        path: &str,
        options: ListOptions,
    ) -> Result<Vec<FileInfo>, ContainerError> {
        self.inner.list_files(path, options).await
    }
    async fn remove_path(&self, path: &str, recursive: bool) -> Result<(), ContainerError> {
        self.inner.remove_path(path, recursive).await
    }
    async fn make_dir(&self, path: &str, options: MakeDirOptions) -> Result<(), ContainerError> {
        self.inner.make_dir(path, options).await
    }
    async fn exists(&self, path: &str) -> Result<bool, ContainerError> {
        self.inner.exists(path).await
    }
    async fn start(&self, services: &[String]) -> Result<(), ContainerError> {
        self.inner.start(services).await
    }
    async fn stop(&self, services: &[String]) -> Result<(), ContainerError> {
        self.inner.stop(services).await
    }
    async fn is_running(&self, service: &str) -> Result<bool, ContainerError> {
        self.inner.is_running(service).await
    }
}
