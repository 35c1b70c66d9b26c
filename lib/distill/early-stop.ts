// Early stopping. G2L's sentence, "training halts when the current loss exceeds the running mean of the last 100
// iterations more than 10 times", has three readings; each is a rule here (docs/method.md, "Early stopping"):
//
//   consecutive  (default) stop once `patience` steps in a row had a loss above the running mean of the `window`
//                losses before each: a plateau detector. A falling curve, however noisy, keeps resetting the streak.
//   total        the literal count: stop once more than `patience` steps ever had a loss above the running mean of
//                the window before them. The count never resets, so a noisy loss stops a run a few dozen steps
//                after its first flat stretch (the demo at step 173 of 300): kept for reproducing that reading.
//   ratio        a divergence guard: stop at a loss above `factor` times the magnitude of the running mean.
//
// Nothing is compared before a full window of previous losses exists, and nothing stops before `minSteps` steps
// (losses are still recorded). The state is plain data, saved in every checkpoint for an exact resume.

export type EarlyStopRule = 'consecutive' | 'total' | 'ratio';

export interface EarlyStopSettings {
  rule: EarlyStopRule;
  /** Losses in the running mean. */
  window: number;
  /** consecutive: steps in a row above the mean that stop the run; total: the count that must be exceeded. */
  patience: number;
  /** ratio: a loss above factor * |running mean| stops the run. */
  factor: number;
  /** No stop before this many steps. */
  minSteps: number;
}

export interface EarlyStopState {
  /** The last `window` losses, oldest first. */
  recent: number[];
  /** Steps so far whose loss exceeded the running mean of the window before them. */
  exceeded: number;
  /** The current run of such steps (reset by a loss at or below the mean). Checkpoints written before it existed: 0. */
  streak?: number;
  /** Steps recorded (for minSteps). Older checkpoints: the caller's step count. */
  steps?: number;
}

export interface EarlyStopDecision {
  stop: boolean;
  /** Why, in words, when stop is true. */
  reason?: string;
}

export class EarlyStopping {
  private state: Required<EarlyStopState>;

  constructor(
    readonly settings: EarlyStopSettings,
    state?: EarlyStopState,
    stepsDone = 0,
  ) {
    this.state = {
      recent: state ? [...state.recent] : [],
      exceeded: state?.exceeded ?? 0,
      streak: state?.streak ?? 0,
      steps: state?.steps ?? stepsDone,
    };
  }

  /** Records a step's loss and says whether the run should stop after it. */
  update(loss: number): EarlyStopDecision {
    const { recent } = this.state;
    const { rule, window, patience, factor, minSteps } = this.settings;
    let over = false;
    let mean = Number.NaN;
    if (recent.length === window) {
      mean = recent.reduce((a, b) => a + b, 0) / recent.length;
      over = loss > mean;
      if (over) this.state.exceeded += 1;
      this.state.streak = over ? this.state.streak + 1 : 0;
    }
    recent.push(loss);
    if (recent.length > window) recent.shift();
    this.state.steps += 1;
    if (this.state.steps < minSteps || Number.isNaN(mean)) return { stop: false };
    const prev = `the running mean of the previous ${window} (${mean.toPrecision(6)})`;
    switch (rule) {
      case 'consecutive':
        return this.state.streak >= patience
          ? { stop: true, reason: `consecutive: ${this.state.streak} steps in a row had a loss above ${prev}` }
          : { stop: false };
      case 'total':
        return this.state.exceeded > patience
          ? {
              stop: true,
              reason: `total: ${this.state.exceeded} steps so far had a loss above the running mean of the ${window} before them (more than ${patience})`,
            }
          : { stop: false };
      case 'ratio':
        return loss > factor * Math.abs(mean)
          ? {
              stop: true,
              reason: `ratio: the loss ${loss.toPrecision(6)} exceeds ${factor} times the magnitude of ${prev}`,
            }
          : { stop: false };
    }
  }

  get exceeded(): number {
    return this.state.exceeded;
  }

  get streak(): number {
    return this.state.streak;
  }

  snapshot(): Required<EarlyStopState> {
    return { ...this.state, recent: [...this.state.recent] };
  }
}
