// Drives the emulator with Neon's official TypeScript client
// (@neondatabase/api-client), as validate.sh asks:
//   node validate.mjs create-project            -> {"project_id", "branch_id", "uri"}
//   node validate.mjs create-branch PROJECT_ID  -> {"branch_id", "uri"}
// Env: NEON_API_HOST (the emulator's .../api/v2), NEON_API_KEY.
import { createApiClient } from '@neondatabase/api-client';

const apiHost = process.env.NEON_API_HOST;
const apiKey = process.env.NEON_API_KEY;
if (!apiHost || !apiKey) {
  console.error('NEON_API_HOST and NEON_API_KEY are required');
  process.exit(2);
}
const api = createApiClient({ apiKey, baseURL: apiHost, timeout: 60000 });

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Polls every operation of the project until none is scheduled or running;
// 423 Locked is retried, as Neon's docs say.
async function waitForOperations(projectId) {
  const deadline = Date.now() + 180000;
  for (;;) {
    const { data } = await api.listProjectOperations({ projectId });
    const pending = data.operations.filter((o) => o.status === 'scheduling' || o.status === 'running');
    const failed = data.operations.filter((o) => o.status === 'failed');
    if (failed.length > 0) {
      throw new Error(`operation failed: ${JSON.stringify(failed[0])}`);
    }
    if (pending.length === 0) return data.operations;
    if (Date.now() > deadline) throw new Error('operations did not finish');
    await sleep(200);
  }
}

async function retryLocked(call) {
  for (let attempt = 0; ; attempt++) {
    try {
      return await call();
    } catch (err) {
      if (err.response?.status === 423 && attempt < 100) {
        await sleep(200);
        continue;
      }
      throw err;
    }
  }
}

async function main() {
  const [command, projectArg] = process.argv.slice(2);
  if (command === 'create-project') {
    const { data, status } = await api.createProject({ project: { name: 'validate-official-client' } });
    if (status !== 201) throw new Error(`createProject: HTTP ${status}`);
    const projectId = data.project.id;
    const branchId = data.branch.id;
    if (data.roles[0].name !== 'neondb_owner' || data.databases[0].name !== 'neondb') {
      throw new Error(`unexpected defaults: ${JSON.stringify({ roles: data.roles, databases: data.databases })}`);
    }
    await waitForOperations(projectId);
    const project = await api.getProject(projectId);
    if (project.data.project.id !== projectId) throw new Error('getProject returned another project');
    const { data: uri } = await api.getConnectionUri({
      projectId,
      branch_id: branchId,
      database_name: 'neondb',
      role_name: 'neondb_owner',
    });
    if (uri.uri !== data.connection_uris[0].connection_uri) {
      throw new Error('getConnectionUri and createProject disagree');
    }
    console.log(JSON.stringify({ project_id: projectId, branch_id: branchId, uri: uri.uri }));
  } else if (command === 'create-branch') {
    const projectId = projectArg;
    const { data, status } = await retryLocked(() =>
      api.createProjectBranch(projectId, {
        branch: { name: 'dev' },
        endpoints: [{ type: 'read_write' }],
      }),
    );
    if (status !== 201) throw new Error(`createProjectBranch: HTTP ${status}`);
    await waitForOperations(projectId);
    const { data: branch } = await api.getProjectBranch(projectId, data.branch.id);
    if (branch.branch.current_state !== 'ready') throw new Error(`branch not ready: ${branch.branch.current_state}`);
    const { data: endpoints } = await api.listProjectBranchEndpoints(projectId, data.branch.id);
    if (endpoints.endpoints.length !== 1 || endpoints.endpoints[0].current_state !== 'active') {
      throw new Error(`unexpected endpoints: ${JSON.stringify(endpoints)}`);
    }
    const { data: uri } = await api.getConnectionUri({
      projectId,
      branch_id: data.branch.id,
      database_name: 'neondb',
      role_name: 'neondb_owner',
    });
    console.log(JSON.stringify({ branch_id: data.branch.id, uri: uri.uri }));
  } else {
    console.error('usage: validate.mjs create-project | create-branch PROJECT_ID');
    process.exit(2);
  }
}

main().catch((err) => {
  const detail = err.response ? `HTTP ${err.response.status}: ${JSON.stringify(err.response.data)}` : err.stack;
  console.error(`validate.mjs: ${detail}`);
  process.exit(1);
});
