/** SIGINT and SIGTERM close what a tool started, once, then the process ends. */
export function onShutdown(close: () => Promise<void>): void {
  let closing = false;
  const stop = (signal: string) => {
    if (closing) return;
    closing = true;
    close().then(
      () => process.exit(0),
      (error: unknown) => {
        console.error(`${signal}: shutdown failed: ${(error as Error).message}`);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
  if (process.env['PBKV_EXIT_WITH_PARENT'] === '1') {
    // The parent holds our stdin open; when it is gone, even killed outright, we read EOF
    // and stop, so a cluster never outlives the script or the test that started it.
    process.stdin.on('end', () => stop('parent exited'));
    process.stdin.on('error', () => stop('parent exited'));
    process.stdin.resume();
  }
}
