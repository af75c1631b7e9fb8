/** The status page (being built on the page branch): until it lands, a pointer to /status. */
export const STATUS_PAGE_HTML = '<!doctype html><title>pbkv</title><p>See <a href="/status">/status</a> and <a href="/metrics">/metrics</a>.</p>\n';
