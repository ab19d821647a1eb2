namespace MosaicBert.Distributed.Tests;

/// <summary>
/// Ranks as threads: each in-process rank blocks in sockets and collectives the way a process would, so the tests
/// start them on the thread pool and join them with a time limit.
/// </summary>
internal static class Threads
{
    public static Task<T> Start<T>(Func<T> rank) => Task.Run(rank, TestContext.Current.CancellationToken);

    public static Task Start(Action rank) => Task.Run(rank, TestContext.Current.CancellationToken);

    /// <summary>The rank's result, or its exception as thrown (not wrapped).</summary>
    public static T Join<T>(Task<T> task, TimeSpan? limit = null)
    {
        if (!((IAsyncResult)task).AsyncWaitHandle.WaitOne(limit ?? TimeSpan.FromSeconds(60)))
            throw new TimeoutException("an in-process rank did not finish in time");
        return task.GetAwaiter().GetResult();
    }

    /// <summary>Waits for the task; its exception is thrown as is.</summary>
    public static void Join(Task task, TimeSpan? limit = null) => Join(task.ContinueWith(t => { t.GetAwaiter().GetResult(); return 0; },
        TaskContinuationOptions.ExecuteSynchronously), limit);

    /// <summary>Waits for every task (failing when one does not finish within the limit).</summary>
    public static void JoinAll(IEnumerable<Task> tasks, TimeSpan limit)
    {
        var all = tasks.ToArray();
        if (!Task.WaitAll(all, limit)) throw new TimeoutException("the in-process ranks did not finish in time");
    }
}
