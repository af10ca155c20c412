/** A small typed event emitter. `'*'` listeners see every event. */

export type Listener<T> = (event: T) => void;

export class Emitter<M extends { [K in keyof M]: { type: string } }> {
  private listeners = new Map<keyof M | '*', Set<Listener<never>>>();

  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof M>(type: K, fn: Listener<M[K]>): () => void;
  on(type: '*', fn: Listener<M[keyof M]>): () => void;
  on(type: keyof M | '*', fn: Listener<never>): () => void {
    let set = this.listeners.get(type);
    if (!set) {
      set = new Set();
      this.listeners.set(type, set);
    }
    set.add(fn);
    return () => this.listeners.get(type)?.delete(fn);
  }

  /** Resolves with the next event of `type`. */
  once<K extends keyof M>(type: K): Promise<M[K]> {
    return new Promise((resolve) => {
      const off = this.on(type, (e: M[K]) => {
        off();
        resolve(e);
      });
    });
  }

  off<K extends keyof M>(type: K | '*', fn: Listener<M[K]>): void {
    this.listeners.get(type)?.delete(fn as Listener<never>);
  }

  emit<K extends keyof M>(type: K, event: M[K]): void {
    for (const key of [type, '*'] as const) {
      for (const fn of [...(this.listeners.get(key) ?? [])]) {
        try {
          (fn as Listener<M[K]>)(event);
        } catch (e) {
          // A listener's bug must not break the session.
          queueMicrotask(() => {
            throw e;
          });
        }
      }
    }
  }
}
