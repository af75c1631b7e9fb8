/** RxJS operators the node's flows share. */
import { map, race, type MonoTypeOperatorFunction, type Observable } from 'rxjs';

/**
 * Mirrors the source until `failure$` emits, then fails with what it emitted: a wait (for
 * acks, for a batch to be applied) that ends at once when what it waits on is gone.
 */
export function failWhen<T>(failure$: Observable<Error>): MonoTypeOperatorFunction<T> {
  return (source) =>
    race(
      source,
      failure$.pipe(
        map((error): T => {
          throw error;
        }),
      ),
    );
}
