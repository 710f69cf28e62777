import {
  ClientClosedError,
  Etcd3,
  GRPCCancelledError,
  GRPCDeadlineExceededError,
  GRPCUnavailableError,
  isRecoverableError,
  type IOptions,
  type KVClient,
} from 'etcd3';

/** A failed etcd call; `unreachable` when etcd could not be reached in time rather than refusing the request. */
export class EtcdRegistryError extends Error {
  override name = 'EtcdRegistryError';
  constructor(
    message: string,
    readonly unreachable: boolean,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export type CallOptions = NonNullable<Parameters<KVClient['range']>[1]>;
type FaultPolicy = NonNullable<NonNullable<IOptions['faultHandling']>['global']>;

/**
 * The etcd3 client with fault handling we can reason about. etcd3's default per-host circuit breaker keeps a
 * host "broken" for 5 s after three failures, so after an etcd restart every call would keep failing for
 * seconds although etcd is back; it is replaced by a pass-through. The global policy retries a transport
 * failure once per configured host (etcd3 walks its shuffled host list across attempts, which is how a dead
 * member is skipped), all within the caller's single deadline.
 */
export function createEtcdClient(endpoints: string[]): Etcd3 {
  return new Etcd3({
    hosts: endpoints,
    faultHandling: {
      host: () => retryPolicy(1),
      global: retryPolicy(endpoints.length + 1),
    },
    grpcOptions: {
      // etcd3 throws a channel away after a transport error and builds a new one for the next call; with
      // grpc-js's shared subchannel pool that new channel would inherit the old one's reconnect backoff.
      'grpc.use_local_subchannel_pool': 1,
      'grpc.initial_reconnect_backoff_ms': 100,
      'grpc.max_reconnect_backoff_ms': 1_000,
      // A silently dead peer (power loss, partition) closes no socket; pings make the watch stream fail so
      // the registry resyncs. etcd accepts pings no more often than every 5 s by default.
      'grpc.keepalive_time_ms': 10_000,
      'grpc.keepalive_timeout_ms': 5_000,
      // Pages are bounded (see rangeAll), but one big record must not trip grpc's 4 MiB default.
      'grpc.max_receive_message_length': 64 * 1024 * 1024,
    },
  });
}

function retryPolicy(attempts: number): FaultPolicy {
  const noListeners = () => ({ dispose() {} });
  const policy = {
    onSuccess: noListeners,
    onFailure: noListeners,
    async execute<T>(fn: (ctx: { signal: AbortSignal }) => PromiseLike<T> | T, signal?: AbortSignal): Promise<T> {
      const ctx = { signal: signal ?? new AbortController().signal };
      for (let attempt = 1; ; attempt++) {
        try {
          return await fn(ctx);
        } catch (err) {
          if (attempt >= attempts || !(err instanceof Error) || !isRecoverableError(err)) throw err;
        }
      }
    },
  };
  return policy as unknown as FaultPolicy;
}

/** Runs etcd calls with a deadline each and turns failures into errors that name the etcd endpoints. */
export class EtcdCaller {
  constructor(
    readonly where: string,
    private readonly timeoutMs: number,
  ) {}

  options(): CallOptions {
    return { deadline: Date.now() + this.timeoutMs };
  }

  async call<T>(what: string, fn: (options: CallOptions) => Promise<T>): Promise<T> {
    try {
      return await fn(this.options());
    } catch (err) {
      throw this.wrap(what, err);
    }
  }

  wrap(what: string, err: unknown): EtcdRegistryError {
    if (err instanceof EtcdRegistryError) return err;
    const detail = err instanceof Error ? err.message : String(err);
    if (err instanceof ClientClosedError) {
      return new EtcdRegistryError(`registry etcd at ${this.where}: client closed (${what})`, false, { cause: err });
    }
    const unreachable =
      err instanceof GRPCUnavailableError ||
      err instanceof GRPCDeadlineExceededError ||
      err instanceof GRPCCancelledError ||
      (err instanceof Error && isRecoverableError(err));
    return unreachable
      ? new EtcdRegistryError(`registry etcd at ${this.where} unreachable: ${detail} (${what})`, true, { cause: err })
      : new EtcdRegistryError(`registry etcd at ${this.where}: ${what} failed: ${detail}`, false, { cause: err });
  }
}
