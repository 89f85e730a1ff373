//! The steps a job store that shares its backend with the worker store does in one (Redis):
//! a commit that queues the tasks it dispatched, a pop that locks the jobs of the tasks it
//! takes, a lock that forgets the task whose result arrived and records the result's nonce. The
//! memory store has none of them (the core takes the separate steps).

use super::*;
use avto::storage::{Finishing, PoppedJob};

#[test]
fn memory_has_no_combined_steps() {
    let s = Stores::memory();
    assert!(!s.jobs.commits_queueing());
    assert!(s.jobs.pop_locked("w", now_ms(), 1).is_none());
    assert!(s.jobs.lock_finishing("j", "w", "t", None).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_combined_steps() {
    let be = Backend::redis().await;
    let (jobs, workers) = (&be.a.jobs, &be.a.workers);
    let w = format!("w-{}", uid());
    workers.register(worker(&w, &["echo"]), TTL).await.unwrap();

    // A commit queues on live workers only, and releases the lock.
    let id = uid();
    let mut g = jobs.insert_locked(job(&id, "c1")).await.unwrap();
    g.status = JobStatus::WaitingForWorker;
    assert!(jobs.commits_queueing());
    let (t, gone) = (task(&id, "echo", 1.0), task(&id, "echo", 1.0));
    let tasks = vec![(w.clone(), t.clone()), (format!("w-{}", uid()), gone.clone())];
    assert_eq!(jobs.commit_queueing(g, tasks).await.unwrap(), vec![true, false], "queued on the live worker only");
    assert!(workers.task_known(&t.task_id).await.unwrap());
    assert!(!workers.task_known(&gone.task_id).await.unwrap());
    let held = tokio::time::timeout(Duration::from_secs(5), be.b.jobs.lock(&id)).await.expect("lock released");
    let held = held.unwrap().expect("job exists");
    assert_eq!(held.status, JobStatus::WaitingForWorker);

    // A pop while another holder has the job hands the task out with the job busy.
    let popped = jobs.pop_locked(&w, now_ms(), 10).expect("one step on Redis").await.unwrap();
    assert_eq!(popped.len(), 1);
    assert_eq!(popped[0].0.task_id, t.task_id);
    assert!(matches!(popped[0].1, PoppedJob::Busy));
    be.b.jobs.commit(held).await.unwrap();

    // A pop takes up to its batch, FIFO, each job locked for the caller.
    let (id2, id3) = (uid(), uid());
    let mut t2 = None;
    for id in [&id2, &id3] {
        jobs.insert(job(id, "c1")).await.unwrap();
        let t = task(id, "echo", 1.0);
        t2.get_or_insert(t.clone());
        assert!(workers.enqueue(&w, t).await.unwrap());
    }
    let t2 = t2.unwrap();
    let popped = jobs.pop_locked(&w, now_ms(), 10).unwrap().await.unwrap();
    assert_eq!(popped.iter().map(|(t, _)| t.job_id.clone()).collect::<Vec<_>>(), vec![id2.clone(), id3.clone()]);
    assert!(popped.iter().all(|(_, j)| matches!(j, PoppedJob::Locked(_))));
    assert!(tokio::time::timeout(Duration::from_millis(300), be.b.jobs.lock(&id2)).await.is_err(), "locked");
    assert!(jobs.pop_locked(&w, now_ms(), 10).unwrap().await.unwrap().is_empty(), "each task once");
    for (_, j) in popped {
        let PoppedJob::Locked(g) = j else { unreachable!() };
        jobs.commit(g).await.unwrap();
    }
    assert!(workers.task_known(&t2.task_id).await.unwrap(), "running");

    // A result's lock records the nonce and forgets the running task; the nonce again does nothing.
    let nonce = format!("{w}:n-{}", uid());
    let ttl = Duration::from_secs(60);
    let locked = jobs.lock_finishing(&id2, &w, &t2.task_id, Some((&nonce, ttl))).unwrap().await.unwrap();
    let Finishing::Locked(g) = locked else { panic!("the job is locked for the caller") };
    assert!(!workers.task_known(&t2.task_id).await.unwrap(), "the task is forgotten");
    jobs.commit(g).await.unwrap();
    let again = jobs.lock_finishing(&id2, &w, &t2.task_id, Some((&nonce, ttl))).unwrap().await.unwrap();
    assert!(matches!(again, Finishing::Replayed));
    assert!(!be.b.nonces.first_use(&nonce, ttl).await.unwrap(), "the nonce store knows it");
    let missing = jobs.lock_finishing(&uid(), &w, "t", None).unwrap().await.unwrap();
    assert!(matches!(missing, Finishing::NoJob));
}

/// A guard on a job not stored yet (a new job's first step, see `JobStore::unsaved`): nobody sees
/// the job until its commit inserts it, as its first step left it, with its tasks, counted and
/// indexed as any other; the memory store has none.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_unsaved_jobs_are_inserted_by_their_commit() {
    assert!(Stores::memory().jobs.unsaved(Box::new(job("m", "c1"))).is_err(), "memory: the caller inserts first");
    let be = Backend::redis().await;
    let (jobs, workers) = (&be.a.jobs, &be.a.workers);
    let w = format!("w-{}", uid());
    workers.register(worker(&w, &["echo"]), TTL).await.unwrap();
    let client = format!("c-{}", uid());

    // Committed with its tasks: inserted and queued in one step, unlocked.
    let id = uid();
    let Ok(mut g) = jobs.unsaved(Box::new(job(&id, &client))) else { panic!("Redis inserts with the commit") };
    assert!(jobs.get(&id).await.unwrap().is_none(), "not stored before its commit");
    assert!(matches!(jobs.save(&g).await, Err(StorageError::Conflict(_))), "nothing to save yet");
    g.status = JobStatus::WaitingForWorker;
    let (t, gone) = (task(&id, "echo", 1.0), task(&id, "echo", 1.0));
    let tasks = vec![(w.clone(), t.clone()), (format!("w-{}", uid()), gone.clone())];
    assert_eq!(jobs.commit_queueing(g, tasks).await.unwrap(), vec![true, false], "queued on the live worker only");
    assert_eq!(jobs.get(&id).await.unwrap().expect("stored").status, JobStatus::WaitingForWorker);
    assert!(workers.task_known(&t.task_id).await.unwrap());
    assert!(!workers.task_known(&gone.task_id).await.unwrap());
    let held = tokio::time::timeout(Duration::from_secs(5), be.b.jobs.lock(&id)).await.expect("not locked");
    be.b.jobs.commit(held.unwrap().expect("job exists")).await.unwrap();
    let popped = jobs.pop_locked(&w, now_ms(), 10).unwrap().await.unwrap();
    assert_eq!(popped.len(), 1);
    assert!(matches!(popped[0].1, PoppedJob::Locked(_)), "the task finds its job");

    // Committed without tasks, ended by its first step (and quarantined): indexed and counted.
    let (done, quarantined) = (uid(), uid());
    for (id, status) in [(&done, JobStatus::Finished), (&quarantined, JobStatus::Quarantined)] {
        let Ok(mut g) = jobs.unsaved(Box::new(job(id, &client))) else { unreachable!() };
        g.status = status;
        jobs.commit(g).await.unwrap();
    }
    let counts = jobs.counts(Some(&client)).await.unwrap();
    assert_eq!(
        (
            counts.get(&JobStatus::WaitingForWorker),
            counts.get(&JobStatus::Finished),
            counts.get(&JobStatus::Quarantined)
        ),
        (Some(&1), Some(&1), Some(&1)),
        "{counts:?}"
    );
    assert_eq!(ids_of(jobs.list_quarantined(&client, 10, 0).await.unwrap()), vec![quarantined.clone()]);
    let listed = ids_of(jobs.list(&client, 10, 0).await.unwrap());
    assert!([&id, &done, &quarantined].iter().all(|i| listed.contains(i)), "{listed:?}");

    // An id that is taken: refused, the stored job untouched.
    let Ok(mut g) = jobs.unsaved(Box::new(job(&done, &client))) else { unreachable!() };
    g.status = JobStatus::Failed;
    assert!(matches!(jobs.commit(g).await, Err(StorageError::Conflict(_))));
    let Ok(g) = jobs.unsaved(Box::new(job(&done, &client))) else { unreachable!() };
    assert!(matches!(
        jobs.commit_queueing(g, vec![(w.clone(), task(&done, "echo", 1.0))]).await,
        Err(StorageError::Conflict(_))
    ));
    assert_eq!(jobs.get(&done).await.unwrap().unwrap().status, JobStatus::Finished);
    if let PoppedJob::Locked(g) = popped.into_iter().next().unwrap().1 {
        jobs.commit(g).await.unwrap();
    }
}
