//! Every child process is forked from one thread that lives as long as the server.
//!
//! Children die with the server through `PR_SET_PDEATHSIG`, and Linux sends that
//! signal when the *thread* that forked the child exits, not the process. Forked from
//! tokio's blocking pool, whose idle threads retire after 10 s, pre-warmed instances
//! were killed at random; this thread never exits, so a child's life hangs on the
//! server's alone.

use std::ffi::CString;
use std::io;
use std::os::unix::process::CommandExt;
use std::sync::mpsc;
use std::sync::OnceLock;

use crate::cgroup::InstanceCgroup;

type Job = Box<dyn FnOnce() + Send>;

fn spawner() -> &'static mpsc::Sender<Job> {
    static SPAWNER: OnceLock<mpsc::Sender<Job>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("updraft-spawner".into())
            .spawn(move || {
                for job in queue {
                    job();
                }
            })
            .expect("starting the spawner thread");
        jobs
    })
}

/// Makes `cmd` start in its own process group and `cgroup`, dying with the server,
/// with the umask an ordinary process has rather than the server's private one.
fn prepare(cmd: &mut std::process::Command, cgroup: Option<&InstanceCgroup>) {
    let procs: Vec<CString> = cgroup.map(|c| c.procs_files()).unwrap_or_default();
    cmd.process_group(0);
    // SAFETY: only async-signal-safe calls (prctl, umask, open, write, close) on
    // memory prepared before fork.
    unsafe {
        cmd.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            libc::umask(0o022);
            for path in &procs {
                let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd >= 0 {
                    libc::write(fd, b"0".as_ptr().cast(), 1);
                    libc::close(fd);
                }
            }
            Ok(())
        });
    }
}

/// Forks `cmd` as `prepare` says, on the spawner thread.
pub(crate) fn fork(
    mut cmd: std::process::Command,
    cgroup: Option<&InstanceCgroup>,
) -> io::Result<tokio::process::Child> {
    prepare(&mut cmd, cgroup);
    // The child is registered with the caller's runtime, whichever thread forks it.
    let runtime = tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
    let (reply, answer) = mpsc::sync_channel(1);
    let gone = || io::Error::other("the spawner thread is gone");
    spawner()
        .send(Box::new(move || {
            let _entered = runtime.enter();
            let _exclusive = crate::FORK_LOCK.write().unwrap_or_else(|p| p.into_inner());
            let _ = reply.send(tokio::process::Command::from(cmd).spawn());
        }))
        .map_err(|_| gone())?;
    answer.recv().map_err(|_| gone())?
}

/// Starts `cmd` as `fork` does, for a caller that waits for it on a thread of its own
/// rather than on a runtime.
pub fn spawn_child(mut cmd: std::process::Command, cgroup: Option<&InstanceCgroup>) -> io::Result<std::process::Child> {
    prepare(&mut cmd, cgroup);
    let _exclusive = crate::FORK_LOCK.write().unwrap_or_else(|p| p.into_inner());
    cmd.spawn()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn a_child_outlives_the_thread_that_asked_for_it() {
        // Blocking threads that idle for 20 ms retire, as tokio's do after 10 s.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_keep_alive(Duration::from_millis(20))
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut child = tokio::task::spawn_blocking(|| {
                let mut sleep = std::process::Command::new("sleep");
                sleep.arg("30");
                super::fork(sleep, None).unwrap()
            })
            .await
            .unwrap();
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert!(
                child.try_wait().unwrap().is_none(),
                "the child died with the blocking thread that forked it"
            );
            child.kill().await.unwrap();
        });
    }
}
