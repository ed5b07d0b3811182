// The operator dashboard (issue 7, "single click"): a page served by the daemon's API server that
// shows the node, its peers, its VMs and recent notifications, and fails VMs, hosts and sites
// over through the same API routes as the CLI. The page and scripts need no token; every datum
// and action does. The token is handed over in the URL's fragment, which never reaches a server.
import { readFile } from 'node:fs/promises'
import { DaemonUnavailableError } from '../client.js'
import { nodePaths } from '../paths.js'
import { DASHBOARD_PATH } from './routes.js'

export { DASHBOARD_PATH, dashboardRoutes } from './routes.js'

/** The dashboard's address for an API at `apiUrl`, carrying `token` in the fragment. */
export function dashboardUrl(apiUrl: string, token: string): string {
  return `${new URL(DASHBOARD_PATH, apiUrl).href}#token=${encodeURIComponent(token)}`
}

/** The dashboard's address of the node running on `dir`, from its api.json and api.token. */
export async function nodeDashboardUrl(dir: string): Promise<string> {
  const paths = nodePaths(dir)
  try {
    const { url } = JSON.parse(await readFile(paths.api, 'utf8')) as { url: string }
    const token = (await readFile(paths.apiToken, 'utf8')).trim()
    return dashboardUrl(url, token)
  } catch {
    throw new DaemonUnavailableError(
      `no node is running on ${dir} (start it with: replimesh start --dir ${dir})`,
    )
  }
}
