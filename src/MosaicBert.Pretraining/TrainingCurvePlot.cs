using System.Globalization;
using System.Text;

namespace MosaicBert.Pretraining;

/// <summary>One point of a training curve.</summary>
/// <param name="Step">Optimizer step.</param>
/// <param name="Value">Loss (or any metric).</param>
public readonly record struct CurvePoint(long Step, double Value);

/// <summary>
/// A self-contained SVG of training and evaluation loss against steps, rewritten atomically beside the checkpoints
/// while a run goes (no plotting library is available here; an SVG opens in any browser).
/// </summary>
public static class TrainingCurvePlot
{
    private const int Width = 800, Height = 480, Left = 70, Right = 20, Top = 40, Bottom = 50;

    /// <summary>Renders the curves as SVG text.</summary>
    public static string Render(string title, IReadOnlyList<CurvePoint> train, IReadOnlyList<CurvePoint> eval)
    {
        var all = train.Concat(eval).Where(p => double.IsFinite(p.Value)).ToList();
        var sb = new StringBuilder();
        sb.Append(CultureInfo.InvariantCulture,
            $"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{Width}\" height=\"{Height}\" viewBox=\"0 0 {Width} {Height}\" font-family=\"sans-serif\" font-size=\"12\">\n");
        sb.Append(CultureInfo.InvariantCulture, $"<rect width=\"{Width}\" height=\"{Height}\" fill=\"white\"/>\n");
        sb.Append(CultureInfo.InvariantCulture, $"<text x=\"{Width / 2}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{Escape(title)}</text>\n");
        if (all.Count == 0)
        {
            sb.Append(CultureInfo.InvariantCulture, $"<text x=\"{Width / 2}\" y=\"{Height / 2}\" text-anchor=\"middle\">no data yet</text>\n</svg>\n");
            return sb.ToString();
        }
        double x0 = all.Min(p => p.Step), x1 = Math.Max(all.Max(p => p.Step), x0 + 1);
        double y0 = all.Min(p => p.Value), y1 = all.Max(p => p.Value);
        if (y1 - y0 < 1e-9) (y0, y1) = (y0 - 0.5, y1 + 0.5);
        double pad = (y1 - y0) * 0.05;
        y0 -= pad;
        y1 += pad;
        double X(double step) => Left + (step - x0) / (x1 - x0) * (Width - Left - Right);
        double Y(double v) => Height - Bottom - (v - y0) / (y1 - y0) * (Height - Top - Bottom);

        // Axes with five ticks each.
        sb.Append(CultureInfo.InvariantCulture,
            $"<path d=\"M{Left},{Top} V{Height - Bottom} H{Width - Right}\" stroke=\"black\" fill=\"none\"/>\n");
        for (int i = 0; i <= 4; i++)
        {
            double v = y0 + (y1 - y0) * i / 4, s = x0 + (x1 - x0) * i / 4;
            sb.Append(CultureInfo.InvariantCulture,
                $"<line x1=\"{Left}\" x2=\"{Width - Right}\" y1=\"{Y(v):F1}\" y2=\"{Y(v):F1}\" stroke=\"#ddd\"/><text x=\"{Left - 6}\" y=\"{Y(v) + 4:F1}\" text-anchor=\"end\">{v:G4}</text>\n");
            sb.Append(CultureInfo.InvariantCulture,
                $"<text x=\"{X(s):F1}\" y=\"{Height - Bottom + 18}\" text-anchor=\"middle\">{s:F0}</text>\n");
        }
        sb.Append(CultureInfo.InvariantCulture, $"<text x=\"{(Left + Width - Right) / 2}\" y=\"{Height - 10}\" text-anchor=\"middle\">step</text>\n");
        sb.Append(CultureInfo.InvariantCulture, $"<text x=\"16\" y=\"{(Top + Height - Bottom) / 2}\" transform=\"rotate(-90 16 {(Top + Height - Bottom) / 2})\" text-anchor=\"middle\">MLM loss</text>\n");
        Series(sb, train, "#1f77b4", X, Y);
        Series(sb, eval, "#d62728", X, Y);
        sb.Append(CultureInfo.InvariantCulture,
            $"<g><rect x=\"{Width - 190}\" y=\"{Top}\" width=\"12\" height=\"3\" fill=\"#1f77b4\"/><text x=\"{Width - 172}\" y=\"{Top + 5}\">train (30% masking)</text>");
        sb.Append(CultureInfo.InvariantCulture,
            $"<rect x=\"{Width - 190}\" y=\"{Top + 16}\" width=\"12\" height=\"3\" fill=\"#d62728\"/><text x=\"{Width - 172}\" y=\"{Top + 21}\">eval (15% masking)</text></g>\n");
        sb.Append("</svg>\n");
        return sb.ToString();
    }

    private static void Series(StringBuilder sb, IReadOnlyList<CurvePoint> points, string color, Func<double, double> x, Func<double, double> y)
    {
        var finite = points.Where(p => double.IsFinite(p.Value)).ToList();
        if (finite.Count == 0) return;
        sb.Append(CultureInfo.InvariantCulture, $"<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"");
        foreach (var p in finite) sb.Append(CultureInfo.InvariantCulture, $"{x(p.Step):F1},{y(p.Value):F1} ");
        sb.Append("\"/>\n");
        foreach (var p in finite.Count <= 60 ? finite : [])
            sb.Append(CultureInfo.InvariantCulture, $"<circle cx=\"{x(p.Step):F1}\" cy=\"{y(p.Value):F1}\" r=\"2.5\" fill=\"{color}\"/>\n");
    }

    private static string Escape(string s) => s.Replace("&", "&amp;").Replace("<", "&lt;").Replace(">", "&gt;");

    /// <summary>Writes the SVG atomically (temporary file, then rename), so a viewer never sees half a file.</summary>
    public static void Write(string path, string title, IReadOnlyList<CurvePoint> train, IReadOnlyList<CurvePoint> eval)
    {
        var tmp = path + ".tmp-" + Environment.ProcessId;
        File.WriteAllText(tmp, Render(title, train, eval));
        File.Move(tmp, path, overwrite: true);
    }
}
