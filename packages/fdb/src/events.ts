/** What happened to one entry of a table, with plain values (strings for addresses). */
export type ChangeKind = 'added' | 'removed' | 'changed';

/** One change to a table: an entry added, removed or replaced, as listeners and callers see it. */
export interface ChangeEvent<T> {
  /** What happened to the entry. */
  kind: ChangeKind;
  /** The entry as it is now (for `removed`, as it was). */
  entry: T;
  /** The entry before a change. */
  previous?: T;
}

/** Called with each change, after the whole batch it belongs to is applied. */
export type Listener<T> = (event: ChangeEvent<T>) => void;

/**
 * A minimal typed emitter. Events of a batch are delivered after the whole batch is applied, so a
 * listener that reads the table sees the state the events describe.
 */
export class Emitter<T> {
  private readonly listeners = new Set<Listener<T>>();

  /** Subscribes; returns the function that unsubscribes. */
  on(listener: Listener<T>): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  emit(events: readonly ChangeEvent<T>[]): void {
    if (this.listeners.size === 0) return;
    for (const event of events) for (const listener of this.listeners) listener(event);
  }
}
