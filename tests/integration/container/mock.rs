//! `MockContainer` as a downstream charm would use it in its own unit tests.
//!
//! Needs the `mock` feature (the README's test command uses `--all-features`).
#![cfg(feature = "mock")]

use mockall::predicate::eq;
use synapse_backup::{Container, ContainerError, ExecOptions, ExecOutput, MockContainer};

/// Downstream code under test: reads the server name through any `Container`.
async fn server_name(container: &dyn Container) -> Result<String, ContainerError> {
    let command = ["bash", "-c", "cat /data/server_name", "bash"].map(String::from);
    let options = ExecOptions {
        user: Some("synapse".into()),
        ..ExecOptions::default()
    };
    Ok(container
        .exec(&command, options)
        .await?
        .stdout_text()
        .trim()
        .to_string())
}

#[tokio::test]
async fn exec_expectation_with_a_predicate_on_argv() {
    let mut mock = MockContainer::new();
    mock.expect_exec()
        .withf(|argv: &[String], options: &ExecOptions| {
            argv.first().map(String::as_str) == Some("bash")
                && options.user.as_deref() == Some("synapse")
        })
        .times(1)
        .returning(|_, _| {
            Ok(ExecOutput {
                stdout: b"example.org\n".to_vec(),
                ..ExecOutput::default()
            })
        });

    assert_eq!(server_name(&mock).await.unwrap(), "example.org");
}

#[tokio::test]
async fn errors_and_files_through_the_mock() {
    let mut mock = MockContainer::new();
    mock.expect_exec().returning(|argv, _| {
        Err(ContainerError::ExitedNonZero {
            command: argv[0].clone(),
            exit_code: 1,
            stderr: "no such file".into(),
        })
    });
    mock.expect_pull()
        .with(eq("/data/homeserver.yaml"))
        .returning(|_| Ok(b"server_name: example.org\n".to_vec()));
    mock.expect_is_running()
        .with(eq("synapse"))
        .returning(|_| Ok(true));

    let container: &dyn Container = &mock;
    match server_name(container).await {
        Err(ContainerError::ExitedNonZero {
            command, exit_code, ..
        }) => assert_eq!((command.as_str(), exit_code), ("bash", 1)),
        other => panic!("expected ExitedNonZero, got {other:?}"),
    }
    assert_eq!(
        container.pull("/data/homeserver.yaml").await.unwrap(),
        b"server_name: example.org\n"
    );
    assert!(container.is_running("synapse").await.unwrap());
}
