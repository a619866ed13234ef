import { parseDoctorFlags } from './context.js';
import { runDoctor } from './index.js';
import { renderText } from './report.js';

/** `weftd doctor [flags]`: prints the report (text or --json); resolves to the exit status. */
export async function doctorMain(argv: string[]): Promise<number> {
  const { doctor, options } = parseDoctorFlags(argv);
  const report = await runDoctor(options, doctor);
  process.stdout.write(doctor.json ? `${JSON.stringify(report, null, 2)}\n` : renderText(report));
  return report.ok ? 0 : 1;
}
