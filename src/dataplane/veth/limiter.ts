/**
 * FIFO gate for requests on one netlink socket.
 *
 * - At most `max` requests in flight: more than ~100 unanswered requests overflow the receive buffer
 *   and abort the process inside the native binding.
 * - FIFO, because the kernel applies requests in send order (link up before the routes that need it).
 * - Dumps run alone: the netlink package assembles only one multipart reply at a time and any other
 *   reply arriving in between corrupts it ("Multipart message not terminated properly").
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
