// Early stopping as G2L states it: count the steps whose loss exceeds the running mean of the previous `window`
// (100) losses; stop once the count passes `patience` (10). The count never resets. Counting starts when a full
// window of previous losses exists. The state is plain data, saved in every checkpoint for an exact resume.

export interface EarlyStopState {
  /** The last `window` losses, oldest first. */
  recent: number[];
  /** Steps so far whose loss exceeded the running mean of the window before them. */
  exceeded: number;
}

export class EarlyStopping {
  private state: EarlyStopState;

  constructor(
    readonly window: number,
    readonly patience: number,
    state?: EarlyStopState,
  ) {
    this.state = state ? { recent: [...state.recent], exceeded: state.exceeded } : { recent: [], exceeded: 0 };
  }

  /** Records a step's loss; true when the run should stop after it. */
  update(loss: number): boolean {
    const { recent } = this.state;
    if (recent.length === this.window) {
      const mean = recent.reduce((a, b) => a + b, 0) / recent.length;
      if (loss > mean) this.state.exceeded += 1;
    }
    recent.push(loss);
    if (recent.length > this.window) recent.shift();
    return this.state.exceeded > this.patience;
  }

  get exceeded(): number {
    return this.state.exceeded;
  }

  snapshot(): EarlyStopState {
    return { recent: [...this.state.recent], exceeded: this.state.exceeded };
  }
}
