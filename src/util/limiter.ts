/**
 * FIFO gate: at most `max` tasks at once, in arrival order; an exclusive task runs alone.
 *
 * On one netlink socket: more than ~100 unanswered requests overflow the receive buffer and abort the
 * process inside the native binding; the kernel applies requests in send order (link up before the routes
 * that need it), hence FIFO; and dumps run alone, because the netlink package assembles only one multipart
 * reply at a time. nsmd also admits Requests through one, so that a burst does not run a thousand chains'
 * synchronous work in one turn of the event loop.
 */
interface Waiter {
  exclusive: boolean;
  grant: () => void;
}

export class Limiter {
  private active = 0;
  private exclusiveActive = false;
  private readonly waiting: Waiter[] = [];

  constructor(private readonly max: number) {}

  get inFlight(): number {
    return this.active;
  }

  async run<T>(fn: () => Promise<T>, exclusive = false): Promise<T> {
    if (this.waiting.length === 0 && this.canStart(exclusive)) {
      this.start(exclusive);
    } else {
      await new Promise<void>((grant) => this.waiting.push({ exclusive, grant }));
    }
    try {
      return await fn();
    } finally {
      this.active--;
      if (exclusive) this.exclusiveActive = false;
      this.pump();
    }
  }

  private canStart(exclusive: boolean): boolean {
    if (this.exclusiveActive) return false;
    return exclusive ? this.active === 0 : this.active < this.max;
  }

  private start(exclusive: boolean): void {
    this.active++;
    if (exclusive) this.exclusiveActive = true;
  }

  private pump(): void {
    // Slots are taken here, synchronously, so a newcomer calling run() cannot overtake a waiter.
    while (this.waiting.length > 0) {
      const head = this.waiting[0] as Waiter;
      if (!this.canStart(head.exclusive)) return;
      this.waiting.shift();
      this.start(head.exclusive);
      head.grant();
    }
  }
}
