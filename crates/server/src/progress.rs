//! What a deploy is doing, for a client that watches it. The steps deep in the deploy
//! path (a build, a pull, a compile, the first start) report through a task-local
//! sink, so the functions between them carry no extra parameter; a deploy nobody
//! watches reports to nothing.

use tokio::sync::mpsc;

/// One step, as reported where it happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub phase: &'static str,
    pub detail: Option<String>,
    pub bytes: Option<u64>,
}

pub type Sink = mpsc::UnboundedSender<Step>;

tokio::task_local! {
    static SINK: Sink;
}

/// Reports a step to the deploy's watcher, if it has one.
pub fn report(phase: &'static str, detail: impl Into<Option<String>>) {
    send(Step {
        phase,
        detail: detail.into(),
        bytes: None,
    });
}

fn send(step: Step) {
    let _ = SINK.try_with(|sink| sink.send(step));
}

/// The sink of the task running now, to carry into a task it spawns.
pub fn current() -> Option<Sink> {
    SINK.try_with(Sink::clone).ok()
}

/// Runs `future` reporting to `sink`, when there is one.
pub async fn watched<T>(sink: Option<Sink>, future: impl std::future::Future<Output = T>) -> T {
    match sink {
        Some(sink) => SINK.scope(sink, future).await,
        None => future.await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn steps_reach_the_watcher_of_their_task_and_its_spawned_tasks_only() {
        report("build", "nobody watches".to_string());
        let (sink, mut steps) = mpsc::unbounded_channel();
        watched(Some(sink), async {
            report("build", "pip install".to_string());
            let carried = current();
            tokio::spawn(watched(carried, async { report("pull", "layer 1/1".to_string()) }))
                .await
                .unwrap();
        })
        .await;
        assert_eq!(steps.recv().await.unwrap().detail.as_deref(), Some("pip install"));
        assert_eq!(steps.recv().await.unwrap().phase, "pull");
        assert!(steps.recv().await.is_none(), "the sink is gone with the deploy");
    }
}
