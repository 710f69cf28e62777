/**
 * Lets at most `perTurn` callers through per turn of the event loop; the rest wait, in arrival order, for
 * the next turns. What a caller does synchronously after entering (a Request chain's first ≈0.5 ms) is then
 * bounded per turn, however many arrive at once. Nothing is held after entering, so work that comes back
 * through the same gate (a passthrough endpoint's onward Request) can never wait on itself.
 */
export class TurnGate {
  private readonly waiting: (() => void)[] = [];
  private enteredThisTurn = 0;
  private scheduled = false;

  constructor(private readonly perTurn: number) {}

  enter(): Promise<void> {
    if (this.waiting.length === 0 && this.enteredThisTurn < this.perTurn) {
      this.enteredThisTurn++;
      this.schedule();
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      this.waiting.push(resolve);
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(this.nextTurn);
  }

  private readonly nextTurn = (): void => {
    this.scheduled = false;
    this.enteredThisTurn = 0;
    while (this.waiting.length > 0 && this.enteredThisTurn < this.perTurn) {
      this.enteredThisTurn++;
      this.waiting.shift()!();
    }
    if (this.waiting.length > 0 || this.enteredThisTurn > 0) this.schedule();
  };
}
